"""Fused Triton kernels for the elementwise parts of a decode step on a GPU (one token per row).

A decode step of a small model is bound by kernel launches, not by arithmetic: in plain PyTorch a 0.1B layer
is ~54 kernels, and on an H200 even a CUDA graph of the 0.1B step took 1.6 ms (648 kernels, ~2 us each).
These three kernels replace the ~32 elementwise kernels of a layer between and around its matrix products:

- `shift_mix_`: residual add, LayerNorm, token shift and the interpolations (TimeMix's six, ChannelMix's one),
  with the shift state updated in place;
- `time_mix_prep`: everything between TimeMix's projections and the WKV step (decay, in-context learning rate,
  key normalisation and update, value residual);
- `time_mix_out`: after the WKV step, the per-head GroupNorm, the bonus term and the output gate.

Each computes in float32 and rounds where the PyTorch layers round (the residual stream, LayerNorm outputs),
so a float32 model gives the layers' results to float32 rounding. `model/gpu_decode.py` runs them; under
TRITON_INTERPRET=1 they run on CPU tensors, which is how the tests check them against the PyTorch layers.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _shift_mix_kernel(
    x,  # [B, C] residual stream
    dx,  # [B, C] added to x first (if HAS_DX); the sum is written to x_out
    x_out,
    prev,  # [B, C] the previous token's LayerNorm output: read, then overwritten with this token's
    ln_w,
    ln_b,
    m0, m1, m2, m3, m4, m5,  # [C] interpolation weights (the first M are used)
    out,  # [M, B, C]: out[j] = h + (prev - h) * m_j, h = LayerNorm(x)
    B,
    C,
    eps,
    M: tl.constexpr,
    BLOCK: tl.constexpr,
    HAS_DX: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    o = tl.arange(0, BLOCK)
    mask = o < C
    p = row * C + o
    xv = tl.load(x + p, mask=mask, other=0.0).to(tl.float32)
    if HAS_DX:
        xv = xv + tl.load(dx + p, mask=mask, other=0.0).to(tl.float32)
        xv = xv.to(x_out.dtype.element_ty)
        tl.store(x_out + p, xv, mask=mask)
        xv = xv.to(tl.float32)
    mean = tl.sum(xv, axis=0) / C
    d = tl.where(mask, xv - mean, 0.0)
    var = tl.sum(d * d, axis=0) / C
    h = d * tl.rsqrt(var + eps) * tl.load(ln_w + o, mask=mask).to(tl.float32) + tl.load(ln_b + o, mask=mask).to(tl.float32)
    h = h.to(prev.dtype.element_ty)
    shifted = tl.load(prev + p, mask=mask).to(tl.float32)
    tl.store(prev + p, h, mask=mask)
    h = h.to(tl.float32)
    for j in tl.static_range(M):
        if j == 0:
            mix = tl.load(m0 + o, mask=mask)
        elif j == 1:
            mix = tl.load(m1 + o, mask=mask)
        elif j == 2:
            mix = tl.load(m2 + o, mask=mask)
        elif j == 3:
            mix = tl.load(m3 + o, mask=mask)
        elif j == 4:
            mix = tl.load(m4 + o, mask=mask)
        else:
            mix = tl.load(m5 + o, mask=mask)
        mixed = h + (shifted - h) * mix.to(tl.float32)
        tl.store(out + j * B * C + p, mixed.to(out.dtype.element_ty), mask=mask)


def shift_mix_(
    x: torch.Tensor,
    dx: torch.Tensor | None,
    prev: torch.Tensor,
    norm: torch.nn.LayerNorm,
    mixes: list[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + dx, [len(mixes), B, C] interpolations of LayerNorm(x + dx) with `prev`); `prev` [B, C] becomes
    LayerNorm(x + dx), the next token's shift. `dx` None: x itself."""
    B, C = x.shape
    out = torch.empty(len(mixes), B, C, dtype=x.dtype, device=x.device)
    x_out = x if dx is None else torch.empty_like(x)
    m = [t.reshape(C) for t in mixes]
    m += [m[0]] * (6 - len(m))
    _shift_mix_kernel[(B,)](
        x, x if dx is None else dx, x_out, prev, norm.weight, norm.bias, *m, out, B, C, norm.eps,
        M=len(mixes), BLOCK=triton.next_power_of_2(C), HAS_DX=dx is not None, num_warps=4,
    )
    return x_out, out


@triton.jit
def _time_mix_prep_kernel(
    k,
    v,
    w_pre,  # w0 + tanh(xw @ w1) @ w2
    a_pre,  # a0 + (xa @ a1) @ a2
    v_pre,  # v0 + (xv @ v1) @ v2 (if HAS_RESIDUAL)
    v_first,
    k_k,
    k_a,
    w_out,  # fp32 log decay
    k_out,
    v_out,
    a_out,  # fp32 -kk
    b_out,  # fp32 kk * iclr
    H,
    N: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)  # row * H + head
    o = tl.arange(0, N)
    p = i * N + o
    c = (i % H) * N + o
    kv = tl.load(k + p).to(tl.float32)
    kk = (kv * tl.load(k_k + c).to(tl.float32)).to(k_out.dtype.element_ty).to(tl.float32)
    kk = kk / tl.maximum(tl.sqrt(tl.sum(kk * kk, axis=0)), 1e-12)
    iclr = tl.sigmoid(tl.load(a_pre + p).to(tl.float32)).to(k_out.dtype.element_ty).to(tl.float32)
    ka = tl.load(k_a + c).to(tl.float32)
    scale = (1.0 - ka + iclr * ka).to(k_out.dtype.element_ty).to(tl.float32)
    vv = tl.load(v + p).to(tl.float32)
    if HAS_RESIDUAL:
        gate = tl.sigmoid(tl.load(v_pre + p).to(tl.float32)).to(v_out.dtype.element_ty).to(tl.float32)
        vv = vv + (tl.load(v_first + p).to(tl.float32) - vv) * gate
    # model/rwkv7.py's LOG_DECAY_SCALE, -exp(-0.5)
    tl.store(w_out + p, -0.6065306597126334 * tl.sigmoid(tl.load(w_pre + p).to(tl.float32)))
    tl.store(k_out + p, (kv * scale).to(k_out.dtype.element_ty))
    tl.store(v_out + p, vv.to(v_out.dtype.element_ty))
    tl.store(a_out + p, -kk)
    tl.store(b_out + p, kk * iclr)


def time_mix_prep(
    k: torch.Tensor,
    v: torch.Tensor,
    w_pre: torch.Tensor,
    a_pre: torch.Tensor,
    v_pre: torch.Tensor | None,
    v_first: torch.Tensor | None,
    k_k: torch.Tensor,
    k_a: torch.Tensor,
    heads: int,
) -> tuple[torch.Tensor, ...]:
    """The WKV step's inputs from TimeMix's projections ([B, C] each): (log decay, k, v, a, b), the decay, a
    and b in float32. `v_pre` None (layer 0): no value residual, v passes through."""
    B, C = k.shape
    f32 = {"dtype": torch.float32, "device": k.device}
    w, a, b = torch.empty(B, C, **f32), torch.empty(B, C, **f32), torch.empty(B, C, **f32)
    k_out, v_out = torch.empty_like(k), torch.empty_like(v)
    residual = v_pre is not None
    _time_mix_prep_kernel[(B * heads,)](
        k, v, w_pre, a_pre, v_pre if residual else v, v_first if residual else v, k_k.reshape(C), k_a.reshape(C),
        w, k_out, v_out, a, b, heads, N=C // heads, HAS_RESIDUAL=residual, num_warps=1,
    )
    return w, k_out, v_out, a, b


@triton.jit
def _time_mix_out_kernel(
    y,  # the WKV output
    r,
    k,
    v,
    g,
    r_k,  # [H, N]
    ln_w,
    ln_b,
    out,  # (GroupNorm(y) + (r . k r_k) v) * g, per head
    H,
    eps,
    N: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)
    o = tl.arange(0, N)
    p = i * N + o
    c = (i % H) * N + o
    yv = tl.load(y + p).to(tl.float32)
    mean = tl.sum(yv, axis=0) / N
    d = yv - mean
    yn = (d * tl.rsqrt(tl.sum(d * d, axis=0) / N + eps)).to(out.dtype.element_ty).to(tl.float32)
    yn = (tl.load(ln_b + c).to(tl.float32) + yn * tl.load(ln_w + c).to(tl.float32)).to(out.dtype.element_ty)
    rk = tl.load(r + p).to(tl.float32) * tl.load(k + p).to(tl.float32) * tl.load(r_k + c).to(tl.float32)
    bonus = tl.sum(rk, axis=0).to(out.dtype.element_ty).to(tl.float32)
    yn = (yn.to(tl.float32) + bonus * tl.load(v + p).to(tl.float32)).to(out.dtype.element_ty).to(tl.float32)
    tl.store(out + p, (yn * tl.load(g + p).to(tl.float32)).to(out.dtype.element_ty))


def time_mix_out(
    y: torch.Tensor,
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    r_k: torch.Tensor,
    norm: torch.nn.GroupNorm,
) -> torch.Tensor:
    """TimeMix's input to its output projection, [B, C], from the WKV output y and the step's r, k, v, g."""
    B, C = r.shape
    heads = r_k.shape[0]
    out = torch.empty_like(r)
    _time_mix_out_kernel[(B * heads,)](
        y, r, k, v, g, r_k, norm.weight, norm.bias, out, heads, norm.eps, N=C // heads, num_warps=1,
    )
    return out
