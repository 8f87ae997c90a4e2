"""Torch work on a short-lived thread, so that the calling thread keeps no OpenMP pool.

On CPU, each thread that runs a parallel torch op gets its own OpenMP (libgomp) thread pool, alive as long as
the thread. Once the live pools hold more threads than the machine has CPUs, libgomp stops spinning between
parallel regions, and every op then wakes its helpers through the kernel. Measured on a 2-core Zen 4 with 2
torch threads: a ReLU over [904, 512] floats 23 us with one pool, 59-69 us with two; the guard's 16-row batched
forward 1.6-2x longer. The engine keeps its model calls on one thread (`runtime/model_thread.py`), so the pool
to avoid is the one the caller's thread (usually the main thread, which never exits) would keep after loading
a model, measuring its kernels or building an engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def use_torch_threads() -> None:
    """Give this thread torch's thread count (`torch.set_num_threads`) for its oneDNN and MKL products too.

    A new thread starts with OpenMP's default count, every CPU. Torch applies its own count at the thread's
    first parallel op of its own; a GEMM that comes first runs on every CPU. Measured on a 2-core Zen 4 with
    `torch.set_num_threads(1)`: a first [1024, 768] x [768, 3072] product on a fresh thread used 1.99 CPUs
    (26.7 ms against 46.9 on the main thread). Called where each of our threads starts (not per op: setting
    the count also resizes torch's other thread pools).
    """
    torch.set_num_threads(torch.get_num_threads())


def off_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` run on a new thread and waited for; its result, or its exception re-raised.

    The thread (and its OpenMP pool) is gone when this returns. Torch's thread count applies there too
    (`use_torch_threads`); thread-local modes (grad mode, inference mode) do not carry over.
    """
    outcome: list[Any] = []

    def target() -> None:
        try:
            use_torch_threads()
            outcome.append((True, fn(*args, **kwargs)))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread below
            outcome.append((False, e))

    thread = threading.Thread(target=target, name=f"rwkv7-{getattr(fn, '__name__', 'work')}", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
