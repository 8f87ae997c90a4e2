"""Chunked WKV-7 forward and backward in Triton (exact; the state and all decay sums in float32).

Inside a chunk of C tokens (per value row of the state S, a row vector s over the key index), with
L = inclusive cumsum of the log decays w, Lx = L - w (exclusive), LC = L at the chunk's last token:

    r~ = r*exp(L)   a~ = a*exp(Lx)   b' = b*exp(-L)   k' = k*exp(-L)   b^ = b*exp(LC-L)   k^ = k*exp(LC-L)
    A_ab = strict_lower(a~ b'^T)  A_ak = strict_lower(a~ k'^T)  M_rb = lower(r~ b'^T)  M_rk = lower(r~ k'^T)
    U  = (I - A_ab)^-1 (a~ S0^T + A_ak V)        U[t] = S_{t-1} a_t, the rank-1 "delta" terms (WY form)
    Y  = r~ S0^T + M_rb U + M_rk V
    S1 = S0 * exp(LC)[None, :] + U^T b^ + V^T k^

exp(-L) stays below exp(0.6065 * C) for RWKV-7 decays (log w >= -0.6065): about 1.6e4 for C = 16 and 2.7e8
for C = 32, far from float32 overflow (C = 64 would be exact too but needs more shared memory than GPUs have).

The forward keeps S in registers and walks the chunks in order, split over blocks of value rows (rows never
mix, so they run in parallel). It can save S at every chunk start (BlinkDL's CUDA trainer also checkpoints
every 16 tokens); the backward walks the chunks in reverse from those checkpoints, recomputes the chunk
terms and applies the exact adjoint of the formulas above, carrying dS. The backward keeps a whole head per
program because the key-side gradients sum over all value rows.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..errors import InputError, ParameterError


@triton.jit
def _unit_lower_inverse(A, C: tl.constexpr, LOG2_C: tl.constexpr, PREC: tl.constexpr):
    """(I - A)^-1 for a strictly lower-triangular [C, C] A.

    A is nilpotent (A^C = 0), so the inverse is I + A + ... + A^(C-1) = (I + A)(I + A^2)(I + A^4)...:
    log2(C) squarings as matrix products instead of a C-step forward substitution.
    """
    o_c = tl.arange(0, C)
    inv = tl.where(o_c[:, None] == o_c[None, :], 1.0, 0.0) + A
    power = A
    for _ in tl.static_range(LOG2_C - 1):
        power = tl.dot(power, power, input_precision=PREC)
        inv += tl.dot(inv, power, input_precision=PREC)
    return inv


@triton.jit
def _chunk_terms(r, w, k, a, b, C: tl.constexpr, LOG2_C: tl.constexpr, PREC: tl.constexpr):
    """The state-independent intra-chunk quantities of the module docstring (all [C, N] or [C, C]);
    A_ab is only needed through (I - A_ab)^-1."""
    o_c = tl.arange(0, C)
    strict = o_c[:, None] > o_c[None, :]
    lower = o_c[:, None] >= o_c[None, :]
    L = tl.cumsum(w, axis=0)
    r_t = r * tl.exp(L)
    a_t = a * tl.exp(L - w)
    b_p = b * tl.exp(-L)
    k_p = k * tl.exp(-L)
    A_ab = tl.where(strict, tl.dot(a_t, tl.trans(b_p), input_precision=PREC), 0.0)
    A_ak = tl.where(strict, tl.dot(a_t, tl.trans(k_p), input_precision=PREC), 0.0)
    M_rb = tl.where(lower, tl.dot(r_t, tl.trans(b_p), input_precision=PREC), 0.0)
    M_rk = tl.where(lower, tl.dot(r_t, tl.trans(k_p), input_precision=PREC), 0.0)
    T_inv = _unit_lower_inverse(A_ab, C, LOG2_C, PREC)
    return L, r_t, a_t, b_p, k_p, A_ak, M_rb, M_rk, T_inv


@triton.jit(do_not_specialize=["T"])  # one compile for every sequence length
def _wkv7_chunk_fwd_kernel(
    # r, w, k, v, a, b: [B, T, H, N] each, any float dtype (loaded as fp32)
    r,
    w,
    k,
    v,
    a,
    b,
    h0,  # [B, H, N, N] fp32 initial state (read only if HAS_H0)
    y,  # [B, T, H, N] output, r's dtype
    ht,  # [B, H, N, N] fp32 final state
    hs,  # [B, H, NT, N, N] fp32 state at each chunk start (written only if SAVE_STATES)
    T,
    H: tl.constexpr,
    N: tl.constexpr,
    C: tl.constexpr,
    LOG2_C: tl.constexpr,
    BV: tl.constexpr,
    HAS_H0: tl.constexpr,
    SAVE_STATES: tl.constexpr,
    PREC: tl.constexpr,
):
    i_bh = tl.program_id(0).to(tl.int64)
    i_v = tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, C)
    o_c = tl.arange(0, C)
    o_n = tl.arange(0, N)
    o_v = i_v * BV + tl.arange(0, BV)
    p_s = (i_bh * N + o_v[:, None]) * N + o_n[None, :]  # [BV, N] rows of this program's state block

    if HAS_H0:
        S = tl.load(h0 + p_s)
    else:
        S = tl.zeros([BV, N], dtype=tl.float32)

    for i_t in range(NT):
        t = i_t * C + o_c
        m_t = (t < T)[:, None]
        row = ((i_b * T + t) * H + i_h) * N  # [C] offset of token t, head i_h
        p_k = row[:, None] + o_n[None, :]
        p_v = row[:, None] + o_v[None, :]
        # Padding tokens load as zeros: w = 0 and a = b = k = v = 0 make them exact no-ops on the state.
        r_c = tl.load(r + p_k, mask=m_t, other=0.0).to(tl.float32)
        w_c = tl.load(w + p_k, mask=m_t, other=0.0).to(tl.float32)
        k_c = tl.load(k + p_k, mask=m_t, other=0.0).to(tl.float32)
        a_c = tl.load(a + p_k, mask=m_t, other=0.0).to(tl.float32)
        b_c = tl.load(b + p_k, mask=m_t, other=0.0).to(tl.float32)
        v_c = tl.load(v + p_v, mask=m_t, other=0.0).to(tl.float32)
        if SAVE_STATES:
            tl.store(hs + ((i_bh * NT + i_t) * N + o_v[:, None]) * N + o_n[None, :], S)

        L, r_t, a_t, _, _, A_ak, M_rb, M_rk, T_inv = _chunk_terms(r_c, w_c, k_c, a_c, b_c, C, LOG2_C, PREC)
        X = tl.dot(a_t, tl.trans(S), input_precision=PREC) + tl.dot(A_ak, v_c, input_precision=PREC)
        U = tl.dot(T_inv, X, input_precision=PREC)  # [C, BV]
        Y = tl.dot(r_t, tl.trans(S), input_precision=PREC)
        Y += tl.dot(M_rb, U, input_precision=PREC) + tl.dot(M_rk, v_c, input_precision=PREC)
        tl.store(y + p_v, Y.to(y.dtype.element_ty), mask=m_t)

        LC = tl.sum(w_c, axis=0)
        to_end = tl.exp(LC[None, :] - L)
        S = S * tl.exp(LC)[None, :]
        S += tl.dot(tl.trans(U), b_c * to_end, input_precision=PREC)
        S += tl.dot(tl.trans(v_c), k_c * to_end, input_precision=PREC)

    tl.store(ht + p_s, S)


@triton.jit(do_not_specialize=["T"])  # one compile for every sequence length
def _wkv7_chunk_bwd_kernel(
    # r, w, k, v, a, b: [B, T, H, N] each, as in the forward; dr ... db: their fp32 gradients, same shape
    r,
    w,
    k,
    v,
    a,
    b,
    hs,  # [B, H, NT, N, N] fp32 chunk-start states from the forward
    dy,  # [B, T, H, N] gradient of y
    dht,  # [B, H, N, N] fp32 gradient of the final state (read only if HAS_DHT)
    dr,
    dw,
    dk,
    dv,
    da,
    db,
    dh0,  # [B, H, N, N] fp32 gradient of the initial state
    T,
    H: tl.constexpr,
    N: tl.constexpr,
    C: tl.constexpr,
    LOG2_C: tl.constexpr,
    HAS_DHT: tl.constexpr,
    PREC: tl.constexpr,
):
    i_bh = tl.program_id(0).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, C)
    o_c = tl.arange(0, C)
    o_n = tl.arange(0, N)
    strict = o_c[:, None] > o_c[None, :]
    lower = o_c[:, None] >= o_c[None, :]
    p_s = (i_bh * N + o_n[:, None]) * N + o_n[None, :]

    if HAS_DHT:
        dS = tl.load(dht + p_s)
    else:
        dS = tl.zeros([N, N], dtype=tl.float32)

    for i in range(NT):
        i_t = NT - 1 - i
        t = i_t * C + o_c
        m_t = (t < T)[:, None]
        p = (((i_b * T + t) * H + i_h) * N)[:, None] + o_n[None, :]
        r_c = tl.load(r + p, mask=m_t, other=0.0).to(tl.float32)
        w_c = tl.load(w + p, mask=m_t, other=0.0).to(tl.float32)
        k_c = tl.load(k + p, mask=m_t, other=0.0).to(tl.float32)
        v_c = tl.load(v + p, mask=m_t, other=0.0).to(tl.float32)
        a_c = tl.load(a + p, mask=m_t, other=0.0).to(tl.float32)
        b_c = tl.load(b + p, mask=m_t, other=0.0).to(tl.float32)
        dy_c = tl.load(dy + p, mask=m_t, other=0.0).to(tl.float32)
        S0 = tl.load(hs + ((i_bh * NT + i_t) * N + o_n[:, None]) * N + o_n[None, :])

        # Recompute the forward quantities of this chunk.
        L, r_t, a_t, b_p, k_p, A_ak, M_rb, M_rk, T_inv = _chunk_terms(
            r_c, w_c, k_c, a_c, b_c, C, LOG2_C, PREC
        )
        X = tl.dot(a_t, tl.trans(S0), input_precision=PREC) + tl.dot(A_ak, v_c, input_precision=PREC)
        U = tl.dot(T_inv, X, input_precision=PREC)
        LC = tl.sum(w_c, axis=0)
        to_end = tl.exp(LC[None, :] - L)
        b_h = b_c * to_end
        k_h = k_c * to_end

        # Adjoint of Y and S1 (dS holds dL/dS1) with respect to U, X and V.
        dU = tl.dot(tl.trans(M_rb), dy_c, input_precision=PREC)
        dU += tl.dot(b_h, tl.trans(dS), input_precision=PREC)
        dX = tl.dot(tl.trans(T_inv), dU, input_precision=PREC)
        dv_c = tl.dot(tl.trans(M_rk), dy_c, input_precision=PREC)
        dv_c += tl.dot(k_h, tl.trans(dS), input_precision=PREC)
        dv_c += tl.dot(tl.trans(A_ak), dX, input_precision=PREC)

        # ... with respect to the intra-chunk matrices and the decayed inputs.
        dM_rb = tl.where(lower, tl.dot(dy_c, tl.trans(U), input_precision=PREC), 0.0)
        dM_rk = tl.where(lower, tl.dot(dy_c, tl.trans(v_c), input_precision=PREC), 0.0)
        dA_ab = tl.where(strict, tl.dot(dX, tl.trans(U), input_precision=PREC), 0.0)
        dA_ak = tl.where(strict, tl.dot(dX, tl.trans(v_c), input_precision=PREC), 0.0)
        db_h = tl.dot(U, dS, input_precision=PREC)
        dk_h = tl.dot(v_c, dS, input_precision=PREC)
        dr_t = tl.dot(dy_c, S0, input_precision=PREC)
        dr_t += tl.dot(dM_rb, b_p, input_precision=PREC) + tl.dot(dM_rk, k_p, input_precision=PREC)
        da_t = tl.dot(dX, S0, input_precision=PREC)
        da_t += tl.dot(dA_ab, b_p, input_precision=PREC) + tl.dot(dA_ak, k_p, input_precision=PREC)
        db_p = tl.dot(tl.trans(dM_rb), r_t, input_precision=PREC)
        db_p += tl.dot(tl.trans(dA_ab), a_t, input_precision=PREC)
        dk_p = tl.dot(tl.trans(dM_rk), r_t, input_precision=PREC)
        dk_p += tl.dot(tl.trans(dA_ak), a_t, input_precision=PREC)

        # ... and finally with respect to the raw inputs; w enters through L, Lx = L - w and LC.
        exp_neg_L = tl.exp(-L)
        dL = dr_t * r_t - db_p * b_p - dk_p * k_p - db_h * b_h - dk_h * k_h
        dLx = da_t * a_t
        dLC = tl.sum(dS * S0, axis=0) * tl.exp(LC) + tl.sum(db_h * b_h, axis=0) + tl.sum(dk_h * k_h, axis=0)
        # d w_t = sum_{s >= t} dL_s + sum_{s > t} dLx_s + dLC  (reverse cumulative sums)
        dw_c = tl.sum(dL, axis=0)[None, :] - tl.cumsum(dL, axis=0) + dL
        dw_c += tl.sum(dLx, axis=0)[None, :] - tl.cumsum(dLx, axis=0) + dLC[None, :]

        tl.store(dr + p, dr_t * tl.exp(L), mask=m_t)
        tl.store(dw + p, dw_c, mask=m_t)
        tl.store(dk + p, dk_p * exp_neg_L + dk_h * to_end, mask=m_t)
        tl.store(dv + p, dv_c, mask=m_t)
        tl.store(da + p, da_t * tl.exp(L - w_c), mask=m_t)
        tl.store(db + p, db_p * exp_neg_L + db_h * to_end, mask=m_t)

        dS = dS * tl.exp(LC)[None, :]
        dS += tl.dot(tl.trans(dy_c), r_t, input_precision=PREC)
        dS += tl.dot(tl.trans(dX), a_t, input_precision=PREC)

    tl.store(dh0 + p_s, dS)


def _dot_precision(*tensors: torch.Tensor) -> str:
    """Tensor-core products either way: 3-pass TF32 (about fp32 accuracy) when every input is fp32, so fp32
    matches the reference tightly; plain TF32 for bf16/fp16 inputs, whose own mantissa is coarser.
    ("ieee" fp32 FMA products spill heavily in these kernels.)"""
    return "tf32x3" if all(t.dtype == torch.float32 for t in tensors) else "tf32"


def _block_v(batch_heads: int, N: int, device: torch.device) -> int:
    """Value rows per forward program: the largest block that still gives every SM a program."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    for bv in (64, 32):
        if bv <= N and batch_heads * (N // bv) >= sms:
            return bv
    return 16


def _check_chunk(chunk: int, N: int) -> int:
    """log2(chunk); chunks of 16 (tl.dot's minimum) or 32 (the most that fits in shared memory)."""
    if chunk not in (16, 32):
        raise ParameterError(f"chunk must be 16 or 32, got {chunk}")
    if N < 16 or N & (N - 1):
        raise InputError(f"head size must be a power of two >= 16, got {N}")
    return chunk.bit_length() - 1


def chunk_fwd(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None,
    *,
    save_states: bool = False,
    chunk: int = 16,
    block_v: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Launch the forward on contiguous [B, T, H, N] inputs.

    Returns (y, final state, chunk-start states [B, H, ceil(T / chunk), N, N] or None).
    """
    B, T, H, N = r.shape
    log2_c = _check_chunk(chunk, N)
    bv = block_v or _block_v(B * H, N, r.device)
    NT = triton.cdiv(T, chunk)
    y = torch.empty_like(r)
    ht = torch.empty(B, H, N, N, dtype=torch.float32, device=r.device)
    hs = torch.empty(B, H, NT, N, N, dtype=torch.float32, device=r.device) if save_states else None
    _wkv7_chunk_fwd_kernel[(B * H, N // bv)](
        r,
        w,
        k,
        v,
        a,
        b,
        state if state is not None else ht,  # dummy pointer when there is no initial state
        y,
        ht,
        hs if save_states else ht,
        T,
        H=H,
        N=N,
        C=chunk,
        LOG2_C=log2_c,
        BV=bv,
        HAS_H0=state is not None,
        SAVE_STATES=save_states,
        PREC=_dot_precision(r, w, k, v, a, b),
        num_warps=4 if bv == 16 else 8,
    )
    return y, ht, hs


def chunk_bwd(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    states: torch.Tensor,
    dy: torch.Tensor,
    dht: torch.Tensor | None,
    *,
    chunk: int = 16,
) -> tuple[torch.Tensor, ...]:
    """Launch the backward; `states` are the forward's chunk-start states for the same `chunk`.

    Returns fp32 (dr, dw, dk, dv, da, db, dh0).
    """
    B, T, H, N = r.shape
    log2_c = _check_chunk(chunk, N)
    grads = [torch.empty(B, T, H, N, dtype=torch.float32, device=r.device) for _ in range(6)]
    dh0 = torch.empty(B, H, N, N, dtype=torch.float32, device=r.device)
    _wkv7_chunk_bwd_kernel[(B * H,)](
        r,
        w,
        k,
        v,
        a,
        b,
        states,
        dy,
        dht if dht is not None else dh0,
        *grads,
        dh0,
        T,
        H=H,
        N=N,
        C=chunk,
        LOG2_C=log2_c,
        HAS_DHT=dht is not None,
        PREC=_dot_precision(r, w, k, v, a, b, dy),
        num_warps=8,
    )
    return (*grads, dh0)
