"""Fused single-token WKV-7 step for a batch: one kernel reads each state block once, updates it and writes y,
so decoding is bound by the state's memory traffic (read + write 16 KiB per head in fp32)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..errors import InputError


@triton.jit
def _wkv7_decode_kernel(
    # r, w, k, v, a, b: [B, H, N] each
    r,
    w,
    k,
    v,
    a,
    b,
    s_in,  # [B, H, N, N] fp32 state before the token (read only if HAS_STATE)
    s_out,  # [B, H, N, N] fp32 state after the token; may be s_in itself (in place)
    y,  # [B, H, N] output, r's dtype
    N: tl.constexpr,
    BV: tl.constexpr,
    HAS_STATE: tl.constexpr,
):
    i_bh = tl.program_id(0).to(tl.int64)
    i_v = tl.program_id(1)
    o_n = tl.arange(0, N)
    o_v = i_v * BV + tl.arange(0, BV)
    p_n = i_bh * N + o_n
    p_v = i_bh * N + o_v
    p_s = (i_bh * N + o_v[:, None]) * N + o_n[None, :]
    r_t = tl.load(r + p_n).to(tl.float32)
    w_t = tl.load(w + p_n).to(tl.float32)
    k_t = tl.load(k + p_n).to(tl.float32)
    a_t = tl.load(a + p_n).to(tl.float32)
    b_t = tl.load(b + p_n).to(tl.float32)
    v_t = tl.load(v + p_v).to(tl.float32)
    if HAS_STATE:
        S = tl.load(s_in + p_s)
    else:
        S = tl.zeros([BV, N], dtype=tl.float32)
    sa = tl.sum(S * a_t[None, :], axis=1)  # uses S before the decay
    S = S * tl.exp(w_t)[None, :] + sa[:, None] * b_t[None, :] + v_t[:, None] * k_t[None, :]
    tl.store(s_out + p_s, S)
    tl.store(y + p_v, tl.sum(S * r_t[None, :], axis=1).to(y.dtype.element_ty))


def decode_step(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None,
    out: torch.Tensor,
) -> torch.Tensor:
    """One token: inputs with B * H * N elements ([B, H, N] or [B, 1, H, N]); reads `state` (None: zeros)
    and writes the new state into `out` ([B, H, N, N] fp32 contiguous), which may be `state` itself.

    Returns y shaped like r, in r's dtype.
    """
    B, H, N, _ = out.shape
    for s in (state, out):
        if s is not None and (s.dtype != torch.float32 or not s.is_contiguous() or s.shape != out.shape):
            raise InputError(
                f"the decode step needs contiguous float32 [B, H, N, N] states, got {s.dtype} "
                f"{tuple(s.shape)} (contiguous: {s.is_contiguous()})"
            )
    if r.numel() != B * H * N:
        raise InputError(f"decode inputs must be [B, H, N] or [B, 1, H, N] with B, H, N = {B, H, N}")
    r_, w_, k_, v_, a_, b_ = (t.reshape(B, H, N).contiguous() for t in (r, w, k, v, a, b))
    y = torch.empty_like(r_)
    bv = min(16, N)  # 4 KiB of state per program: enough programs to fill the GPU even at batch 1
    _wkv7_decode_kernel[(B * H, N // bv)](
        r_,
        w_,
        k_,
        v_,
        a_,
        b_,
        out if state is None else state,
        out,
        y,
        N=N,
        BV=bv,
        HAS_STATE=state is not None,
        num_warps=2,
    )
    return y.view(r.shape)
