"""Exact chunkwise-parallel WKV-7: the generalized delta rule in "WY / UT transform" form.

Per head, with S [value, key], token t applies S_t = S_{t-1} F_t + v_t k_t^T, F_t = diag(e^{w_t}) + a_t b_t^T, and
y_t = S_t r_t. Inside a chunk that starts from S0 let g_t = w_1 + ... + w_t (fp32) and gx_t = g_{t-1} (gx_1 = 0).
With the unknown corrections u_t = S_{t-1} a_t, unrolling gives (e^{...} scales the key axis)
    S_t = S0 e^{g_t} + sum_{s<=t} (u_s b_s^T + v_s k_s^T) e^{g_t - g_s}
    u_t = S0 (a_t e^{gx_t}) + sum_{s<t} (A_ab[t,s] u_s + A_ak[t,s] v_s),   A_xy[t,s] = sum_j x_t y_s e^{gx_t - g_s}
so the corrections of a chunk solve one unit-lower-triangular system (I - A_ab) U = Ã S0^T + A_ak V (Ã = a e^{gx}).
The solution is affine in S0: U = P S0^T + W with P = T Ã, W = T A_ak V, T = (I - A_ab)^{-1}. The outputs
y_t = S_{t-1} (r_t e^{w_t}) + u_t (b_t.r_t) + v_t (k_t.r_t) need the same interactions for the query r' = r e^{w}:
    Y      = Q S0^T + Y0      Q = R̃ + M_rb P,  Y0 = M_rb W + M_rk V,  R̃ = r e^{g}
    S_next = S0 G + Hc        G = diag(e^{g_C}) + P^T B̂,  Hc = W^T B̂ + V^T K̂,  (B̂, K̂) = (b, k) e^{g_C - g}
where M_xy is A_xy with query r' plus the diagonal x_t.y_t (G is the product of the chunk's F_t). All of this is
batched over every chunk at once; only S_{c+1} = S_c G_c + Hc_c and Y_c = Q_c S_c^T + Y0_c run chunk by chunk.

The interaction matrices without positive exponents: a chunk of C = sub * 2^L tokens is a binary tree over base
blocks of `sub` tokens. A pair s < t in the two halves of a tree node factors through the last token m of the left
half (gx_t <= g_m <= g_s): e^{gx_t - g_s} = e^{gx_t - g_m} e^{g_m - g_s}, both factors <= 1, so each level of the
tree is one batched matmul, and T follows level by level from the block inverse of a lower-triangular matrix,
[[T0, 0], [T1 A_10 T0, T1]]. Pairs inside a base block (only when C is not a power of two) use the pairwise decay
e^{gx_t - g_s}, masked to -inf before the exp. Every exponent is <= 0 (w is a log decay), so nothing overflows
and strong decays underflow to exact zeros instead of producing inf * 0 = nan, in values and in gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_PAIRS = ((0, 1), (1, 0), (1, 1))  # (query, key) of A_ak, M_rb, M_rk: queries (a, r'), keys (b, k)


def _diag_blocks(m: torch.Tensor, h: int) -> torch.Tensor:
    """View [Z, C/h, h, h] of the h x h diagonal blocks of m [Z, C, C]."""
    Z, C, _ = m.shape
    n = C // h
    return m.view(Z, n, h, n, h).diagonal(0, 1, 3).permute(0, 3, 1, 2)


def _cross_blocks(m: torch.Tensor, h: int) -> torch.Tensor:
    """View [Z, C/2h, h, h] of the blocks of m [Z, C, C] that pair the right half (rows) of each 2h-token tree
    node with its left half (columns)."""
    Z, C, _ = m.shape
    n = C // (2 * h)
    return m.view(Z, n, 2, h, n, 2, h).diagonal(0, 1, 4)[:, 1, :, 0].permute(0, 3, 1, 2)


def _base_blocks(
    qa: torch.Tensor, kb: torch.Tensor, g: torch.Tensor, gx: torch.Tensor, mats: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """Pairs s < t inside each base block of `sub` tokens, from the exact pairwise decays e^{gx_t - g_s}.

    qa, kb: [Zb, sub, 2, N] queries (a, r') and keys (b, k); g, gx: [Zb, sub, N]. Writes the A_ak, M_rb, M_rk
    entries into the diagonal blocks of `mats` ([Z, C, C] each) and returns T = (I - A_ab)^{-1} per block.
    """
    Zb, sub = qa.shape[:2]
    eye = torch.eye(sub, dtype=g.dtype, device=g.device)
    if sub == 1:
        return eye.expand(Zb, 1, 1)
    idx = torch.arange(sub, device=g.device)
    lower = (idx[:, None] > idx[None, :])[:, :, None]  # [t, s, 1]
    dec = torch.exp(torch.where(lower, gx[:, :, None] - g[:, None], float("-inf")))  # [Zb, t, s, N]
    blk = torch.einsum("ztqsj,zskj->ztqsk", qa[:, :, :, None] * dec[:, :, None], kb)  # [Zb, t, 2, s, 2]
    Z = mats[0].shape[0]
    for m, (q, key) in zip(mats, _PAIRS):
        _diag_blocks(m, sub).copy_(blk[:, :, q, :, key].reshape(Z, -1, sub, sub))
    return torch.linalg.solve_triangular(
        eye - blk[:, :, 0, :, 0], eye.expand(Zb, sub, sub), upper=False, unitriangular=True
    )


def wkv7_chunk(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
    chunk_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise-parallel WKV-7 with the semantics of `wkv7_reference` (the math is in the module docstring).

    Inputs [B, T, H, N] with w the log decay (<= 0); state [B, H, N, N] fp32 or None (zeros), never modified.
    Returns (y [B, T, H, N] in r's dtype, final state [B, H, N, N] fp32). All math is fp32, differentiable by
    plain autograd. Any T and chunk_size work: the last chunk is padded with identity tokens (w = 0, all else 0),
    which leave the state unchanged and whose outputs are dropped. Default 32: on CPU with N = 64 it is as fast
    as 16 with half the sequential steps, and 64 is ~15% slower (one more tree level, larger C x C products).
    """
    B, T, H, N = r.shape
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    C = chunk_size
    nc = max(1, -(-T // C))
    pad = nc * C - T
    Z = nc * B * H  # chunk-major, so that one chunk's slice of the batch is contiguous in the sequential pass

    def chunked(x: torch.Tensor) -> torch.Tensor:
        """[B, T, H, N] -> fp32 view [nc, B, H, C, N], time zero-padded to nc * C."""
        x = x.float()
        if pad:
            x = F.pad(x, (0, 0, 0, 0, 0, pad))
        return x.reshape(B, nc, C, H, N).permute(1, 0, 3, 2, 4)

    r_, w_, k_, v_, a_, b_ = (chunked(x) for x in (r, w, k, v, a, b))
    w_ = w_.reshape(Z, C, N)
    v_ = v_.reshape(Z, C, N)
    g = w_.cumsum(1)
    gx = F.pad(g[:, :-1], (0, 0, 1, 0))  # exactly g_{t-1}
    qa = torch.stack((a_, r_ * torch.exp(w_).view_as(r_)), 4).view(Z, C, 2, N)  # queries a, r'
    kb = torch.stack((b_, k_), 4).view(Z, C, 2, N)  # keys b, k
    rk = (kb.view(Z * C, 2, N) @ r_.reshape(Z * C, N, 1)).view(Z, C, 2)  # r_t.b_t, r_t.k_t (diagonal of M)

    # A_ak, M_rb, M_rk and T = (I - A_ab)^{-1}, bottom-up over the binary tree of each chunk.
    A_ak, M_rb, M_rk = (g.new_zeros(Z, C, C) for _ in range(3))
    sub = C // (C & -C)  # odd part of C: the base block size
    Tinv = _base_blocks(*(x.reshape(-1, sub, *x.shape[2:]) for x in (qa, kb, g, gx)), (A_ak, M_rb, M_rk))
    M_rb.diagonal(0, 1, 2).copy_(rk[..., 0])
    M_rk.diagonal(0, 1, 2).copy_(rk[..., 1])
    h = sub
    while h < C:
        n = C // (2 * h)
        qh = qa.view(Z * n, 2, h, 2, N)[:, 1]  # queries of the right half
        kh = kb.view(Z * n, 2, h, 2, N)[:, 0]  # keys of the left half
        if h > 1:  # for h = 1 (adjacent tokens) both factors are exactly e^0
            g_left = g.view(Z * n, 2, h, N)[:, 0]
            mid = g_left[:, -1:]  # g_m, m = last token of the left half
            qh = qh * (gx.view(Z * n, 2, h, N)[:, 1] - mid).exp_()[:, :, None]
            kh = kh * (mid - g_left).exp_()[:, :, None]
        cross = qh.reshape(Z * n, 2 * h, N) @ kh.reshape(Z * n, 2 * h, N).transpose(1, 2)
        cross = cross.view(Z * n, h, 2, h, 2)  # [node, t, query, s, key]
        for m, (q, key) in zip((A_ak, M_rb, M_rk), _PAIRS):
            _cross_blocks(m, h).copy_(cross[:, :, q, :, key].reshape(Z, n, h, h))
        T0, T1 = Tinv.view(Z * n, 2, h, h).unbind(1)
        T10 = T1 @ cross[:, :, 0, :, 0].contiguous() @ T0  # contiguous: BLAS wants a unit inner stride
        Tinv = torch.cat((torch.cat((T0, torch.zeros_like(T0)), 2), torch.cat((T10, T1), 2)), 1)
        h *= 2

    # Chunk-level terms: queries decayed from the chunk start, keys to the chunk end (exponents <= 0).
    egx = torch.exp(gx)
    g_end = g[:, -1:]
    a_s, r_s = (qa * egx[:, :, None]).unbind(2)  # Ã, R̃
    b_e, k_e = (kb * (g_end - g).exp_()[:, :, None]).unbind(2)  # B̂, K̂
    P = Tinv @ a_s
    W = Tinv @ (A_ak @ v_)
    Q = torch.baddbmm(r_s, M_rb, P)  # R̃ + M_rb P
    Y0 = torch.baddbmm(M_rk @ v_, M_rb, W)
    G = P.transpose(1, 2) @ b_e
    G.diagonal(0, 1, 2).add_(torch.exp(g_end[:, 0]))
    Hc = torch.baddbmm(W.transpose(1, 2) @ b_e, v_.transpose(1, 2), k_e)

    # The only sequential part, chunk by chunk: Y = Q S_c^T + Y0, S_{c+1} = S_c G_c + Hc_c. (unbind rather than
    # indexing: its backward stacks the gradients once instead of zero-filling a full-size tensor per chunk.)
    Q, Y0 = Q.view(nc, B * H, C, N).unbind(0), Y0.view(nc, B * H, C, N).unbind(0)
    G, Hc = G.view(nc, B * H, N, N).unbind(0), Hc.view(nc, B * H, N, N).unbind(0)
    S = g.new_zeros(B * H, N, N) if state is None else state.float().reshape(B * H, N, N)
    ys = []
    for c in range(nc):
        ys.append(torch.baddbmm(Y0[c], Q[c], S.transpose(1, 2)).view(B, H, C, N).transpose(1, 2))
        S = torch.baddbmm(Hc[c], S, G[c])
    y = torch.stack(ys, 1).view(B, nc * C, H, N)[:, :T]
    return y.to(r.dtype).contiguous(), S.view(B, H, N, N)
