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

T = TypeVar("T")


def off_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` run on a new thread and waited for; its result, or its exception re-raised.

    The thread (and its OpenMP pool) is gone when this returns. Torch's thread count is process-wide and
    applies there too; thread-local modes (grad mode, inference mode) do not carry over.
    """
    outcome: list[Any] = []

    def target() -> None:
        try:
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
