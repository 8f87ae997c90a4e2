"""The WKV-7 operator behind one entry point, `wkv7`.

Implementations (same signature and semantics, see `reference.py` for the exact recurrence):
    "reference"  sequential float32 loop (ground truth; the T = 1 decode path on CPU)
    "chunk"      exact chunkwise-parallel PyTorch form (CPU prefill, autograd for training)
    "triton"     fused Triton kernels (CUDA; also runs under TRITON_INTERPRET=1 on CPU tensors)
    "cpu"        the token loop in C++ (CPU inference: no autograd), registered by the model's CPU kernels

`impl=None` picks: Triton for CUDA tensors when Triton is importable; on CPU without autograd the C++ loop
when the CPU kernels are built (each (row, head) state stays in L1: 2-7x the chunked form at 1 thread,
measured on a Zen 4 for the guard's and the 0.1B's shapes, T = 50..1024); otherwise the chunked form for
T > 1 and the reference loop for T = 1. The C++ code lives with the model's other CPU kernels
(`rwkv7_provider.model.cpu_kernels`), which registers it here (`register_cpu`): this package imports nothing
above it. The environment variable RWKV7_WKV_IMPL overrides the choice
(useful for tests and benchmarks). Triton is imported lazily: nothing here needs it on CPU.
`wkv7_decode_` is the single-token decode step, in place on a caller-owned state, behind the same choice.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import torch

from ..errors import InputError, ParameterError
from .reference import wkv7_reference

IMPLS = ("reference", "chunk", "triton", "cpu")
WKV = Callable[..., tuple[torch.Tensor, torch.Tensor]]
_cpu: Callable[[], WKV | None] | None = None  # returns the C++ token loop, or None where it is not built


def register_cpu(provider: Callable[[], WKV | None]) -> None:
    """Install the "cpu" implementation: `provider()` returns it (building it on first use), or None."""
    global _cpu
    _cpu = provider


def _cpu_impl() -> WKV | None:
    return _cpu() if _cpu is not None else None


def triton_available() -> bool:
    """True when the `triton` package can be imported (never imports it)."""
    return importlib.util.find_spec("triton") is not None


def pick_impl(r: torch.Tensor, impl: str | None = None, *, grad: bool = False) -> str:
    """Resolve which implementation `wkv7` will run for input `r` (`grad`: autograd must see the result)."""
    impl = impl or os.environ.get("RWKV7_WKV_IMPL") or None
    if impl is not None:
        if impl not in IMPLS:
            raise ParameterError(f"unknown WKV implementation {impl!r}; expected one of {IMPLS}")
        if impl == "cpu" and _cpu_impl() is None:
            raise ParameterError("the 'cpu' WKV implementation needs the compiled CPU kernels, which are unavailable")
        return impl
    if r.is_cuda and triton_available():
        return "triton"
    if not r.is_cuda and not grad and _cpu_impl() is not None:
        return "cpu"
    return "chunk" if r.shape[1] > 1 else "reference"


def wkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
    *,
    cu_seqlens: torch.Tensor | None = None,
    impl: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """WKV-7 over a sequence: inputs [B, T, H, N] (w = log decay), state [B, H, N, N] fp32 (value x key).

    Rows of different lengths can come packed, fla's varlen convention: inputs [1, total, H, N] and
    `cu_seqlens` [rows + 1] (row i is tokens cu_seqlens[i] .. cu_seqlens[i + 1]), state [rows, H, N, N]; the C++
    loop reads them as they are, the other implementations on a zero-padded copy (a zero token, log decay 0,
    leaves the state unchanged). Returns (y in r's shape and dtype, new state). The input state is never modified.
    """
    if r.dim() != 4:
        raise InputError(f"wkv7 expects [B, T, H, N] inputs, got shape {tuple(r.shape)}")
    inputs = (r, w, k, v, a, b, state)
    which = pick_impl(r, impl, grad=torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs))
    if which == "cpu":
        y, new = _cpu_impl()(*inputs, cu_seqlens)
        return y.to(r.dtype), new
    if cu_seqlens is not None:
        lengths = cu_seqlens[1:] - cu_seqlens[:-1]
        rows, width = len(lengths), max(1, int(lengths.max()))
        where = packed_positions(lengths, width)
        y, new = wkv7(*(_pad(t, where, rows, width) for t in inputs[:6]), state, impl=which)
        return y.flatten(0, 1)[where].unsqueeze(0), new
    if which == "reference":
        return wkv7_reference(r, w, k, v, a, b, state)
    if which == "chunk":
        from .chunk import wkv7_chunk

        return wkv7_chunk(r, w, k, v, a, b, state)
    from .triton_ops import wkv7_triton

    return wkv7_triton(r, w, k, v, a, b, state)


def reads_packed(device: torch.device | str) -> bool:
    """Whether inference on `device` runs an implementation that reads packed rows as they are (the C++ loop):
    padding them then costs nothing at all."""
    return pick_impl(torch.empty(1, 1, 1, 1, device=device)) == "cpu"


def packed_positions(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """Where each token of rows packed back to back sits in their right-padded [rows * width] layout."""
    return (torch.arange(width, device=lengths.device) < lengths[:, None]).flatten().nonzero().squeeze(1)


def _pad(x: torch.Tensor, where: torch.Tensor, rows: int, width: int) -> torch.Tensor:
    """Packed [1, total, H, N] -> [rows, width, H, N], zeros in the padding."""
    out = x.new_zeros(rows * width, *x.shape[2:]).index_copy(0, where, x[0])
    return out.view(rows, width, *x.shape[2:])


def wkv7_decode_(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor,
    *,
    impl: str | None = None,
) -> torch.Tensor:
    """One token for a batch: inputs [B, H, N] or [B, 1, H, N]; `state` [B, H, N, N] fp32 is updated IN PLACE.

    Returns y shaped like r, in r's dtype. The caller owns the state buffer: clone it first to keep an
    untouched copy. Triton's fused kernel when `pick_impl` says "triton", otherwise the reference step.
    """
    if pick_impl(r, impl) == "triton":
        from .triton_ops import wkv7_decode_ as decode_triton_

        return decode_triton_(r, w, k, v, a, b, state)
    B, H, N, _ = state.shape
    y, new = wkv7_reference(*(t.reshape(B, 1, H, N) for t in (r, w, k, v, a, b)), state)
    state.copy_(new)
    return y.view(r.shape)


__all__ = ["IMPLS", "packed_positions", "pick_impl", "reads_packed", "register_cpu", "triton_available", "wkv7", "wkv7_decode_", "wkv7_reference"]
