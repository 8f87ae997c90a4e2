"""Triton WKV-7 entry points: `wkv7_triton` (chunked, differentiable), `wkv7_decode_` (fused in-place step).

Only the dispatcher in `__init__.py` imports this module, and only when Triton is wanted, so the package
itself never needs Triton. Under TRITON_INTERPRET=1 (set before triton is first imported) the same kernels
run on CPU tensors, which is how the test suite checks them without a GPU.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .triton_chunk import chunk_bwd, chunk_fwd
from .triton_decode import decode_step

CHUNK = 16  # tokens per chunk; the backward recomputes from a state checkpoint saved every CHUNK tokens


def on_device(t: torch.Tensor):
    """Launch on the tensor's GPU (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else nullcontext()


class WKV7Chunked(torch.autograd.Function):
    """Forward: chunked kernel saving chunk-start states. Backward: the exact adjoint, chunk by chunk."""

    @staticmethod
    def forward(ctx, r, w, k, v, a, b, state):
        with on_device(r):
            y, ht, states = chunk_fwd(r, w, k, v, a, b, state, save_states=True, chunk=CHUNK)
        ctx.save_for_backward(r, w, k, v, a, b, states)
        ctx.has_state = state is not None
        ctx.set_materialize_grads(False)  # an unused final state arrives as None: no zero gradient to read
        return y, ht

    @staticmethod
    def backward(ctx, dy, dht):
        r, w, k, v, a, b, states = ctx.saved_tensors
        dy = torch.zeros_like(r) if dy is None else dy.contiguous()
        with on_device(r):
            *grads, dh0 = chunk_bwd(
                r, w, k, v, a, b, states, dy, None if dht is None else dht.float().contiguous(), chunk=CHUNK
            )
        grads = [g.to(x.dtype) for g, x in zip(grads, (r, w, k, v, a, b))]
        return (*grads, dh0 if ctx.has_state else None)


def wkv7_triton(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `wkv7_reference`: inputs [B, T, H, N], y in r's dtype, new fp32 state; the input
    state is never modified. Differentiable in all seven inputs when autograd needs it."""
    B, T, H, N = r.shape
    if T == 0:
        new = r.new_zeros(B, H, N, N, dtype=torch.float32) if state is None else state.float().clone()
        return r.new_zeros(B, 0, H, N), new
    r, w, k, v, a, b = (t.contiguous() for t in (r, w, k, v, a, b))
    if state is not None:
        state = state.float().contiguous()
    inputs = (r, w, k, v, a, b, state)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        return WKV7Chunked.apply(*inputs)
    with on_device(r):
        if T == 1:  # decoding through `wkv7`: the fused step, writing the new state next to the old one
            new = torch.empty(B, H, N, N, dtype=torch.float32, device=r.device)
            return decode_step(r, w, k, v, a, b, state, new), new
        y, ht, _ = chunk_fwd(*inputs, chunk=CHUNK)
    return y, ht


def wkv7_decode_(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor,
) -> torch.Tensor:
    """One token for a batch (inputs [B, H, N] or [B, 1, H, N]): updates `state` [B, H, N, N] fp32 IN PLACE
    and returns y shaped like r. Clone the state first to keep an untouched copy (the prefix cache does)."""
    with on_device(state):
        return decode_step(r, w, k, v, a, b, state, state)


__all__ = ["CHUNK", "WKV7Chunked", "on_device", "wkv7_decode_", "wkv7_triton"]
