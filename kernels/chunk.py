"""Exact chunkwise-parallel WKV-7: the generalized delta rule in "WY / UT transform" form.

Per head, with S [value, key], token t applies S_t = S_{t-1} F_t + v_t k_t^T, F_t = diag(e^{w_t}) + a_t b_t^T, and
y_t = S_t r_t. Inside a chunk that starts from S0 let g_t = w_1 + ... + w_t (fp32) and gx_t = g_{t-1} (gx_1 = 0).
With the unknown corrections u_t = S_{t-1} a_t, unrolling gives (e^{...} scales the key axis)
    S_t = S0 e^{g_t} + sum_{s<=t} (u_s b_s^T + v_s k_s^T) e^{g_t - g_s}
    u_t = S0 (a_t e^{gx_t}) + sum_{s<t} (A_ab[t,s] u_s + A_ak[t,s] v_s),   A_xy[t,s] = sum_j x_t y_s e^{gx_t - g_s}
so the corrections of a chunk solve one unit-lower-triangular system (I - A_ab) U = Ã S0^T + A_ak V (Ã = a e^{gx}).
Its solution is affine in S0: U = P S0^T + W with P = T Ã, W = T A_ak V, T = (I - A_ab)^{-1}. The outputs
y_t = S_{t-1} (r_t e^{w_t}) + u_t (b_t.r_t) + v_t (k_t.r_t) need the same interactions for the query r' = r e^{w}:
    Y      = R̃ S0^T + M_rb U + M_rk V                   R̃ = r e^{g}
    S_next = S0 diag(e^{g_C}) + U^T B̂ + V^T K̂          (B̂, K̂) = (b, k) e^{g_C - g}
where M_xy is A_xy with query r' plus the diagonal x_t.y_t. Everything except U and S_next is batched over all
chunks at once; the chunk-to-chunk pass computes only U = P S^T + W and S_next (two small matmuls per chunk),
and Y is batched again over the states each chunk started from.

The interaction matrices come in one of two forms, both exact; neither evaluates a positive exponent that could
overflow:
- flat (when every chunk's total decay D = |g_C| is at most MAX_FLAT_DECAY, which RWKV-7's log decay >= -0.61 per
  token guarantees for chunks up to 64 tokens): e^{gx_t - g_s} = e^{gx_t - g_C} e^{g_C - g_s}, queries scaled up
  by at most e^D and keys down to exactly B̂, K̂, so the four matrices are one [2C, N] x [N, 2C] product per chunk,
  masked (not multiplied: the discarded entries may be large) to their lower triangles.
- tree (stronger decays): a chunk of C = sub * 2^L tokens is a binary tree over base blocks of `sub` tokens. A pair
  s < t in the two halves of a tree node factors through the last token m of the left half (gx_t <= g_m <= g_s):
  e^{gx_t - g_s} = e^{gx_t - g_m} e^{g_m - g_s}, both factors <= 1, so each level of the tree is one batched
  matmul. Pairs inside a base block (only when C is not a power of two) use the pairwise decay e^{gx_t - g_s},
  masked to -inf before the exp. Strong decays underflow to exact zeros instead of producing inf * 0 = nan, in
  values and in gradients.
T follows level by level from the block inverse of a lower-triangular matrix, [[T0, 0], [T1 L_10 T0, T1]].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ParameterError

# Largest total log decay |g_C| of a chunk for the flat form: its query factors stay below e^{40} ~ 2e17, far
# from fp32's 3e38 even after products with the inputs and in the gradients.
MAX_FLAT_DECAY = 40.0

_PAIRS = ((0, 0), (0, 1), (1, 0), (1, 1))  # (query, key) of A_ab, A_ak, M_rb, M_rk: queries (a, r'), keys (b, k)


def _diag_blocks(m: torch.Tensor, h: int) -> torch.Tensor:
    """View [Z, C/h, h, h] of the h x h diagonal blocks of m [Z, C, C] (inner stride 1)."""
    Z, C, _ = m.shape
    n = C // h
    return m.view(Z, n, h, n, h).diagonal(0, 1, 3).permute(0, 3, 1, 2)


def _cross_blocks(m: torch.Tensor, h: int) -> torch.Tensor:
    """View [Z, C/2h, h, h] of the blocks of m [Z, C, C] that pair the right half (rows) of each 2h-token tree
    node with its left half (columns)."""
    Z, C, _ = m.shape
    n = C // (2 * h)
    return m.view(Z, n, 2, h, n, 2, h).diagonal(0, 1, 4)[:, 1, :, 0].permute(0, 3, 1, 2)


def _quadrants(A: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The [Z, C, C] views A_ab, A_ak, M_rb, M_rk of A [Z, 2C, 2C] = [[A_ab, A_ak], [M_rb, M_rk]]."""
    C = A.shape[1] // 2
    return tuple(A[:, q * C : (q + 1) * C, key * C : (key + 1) * C] for q, key in _PAIRS)


def unit_lower_inverse(L: torch.Tensor) -> torch.Tensor:
    """(I - L)^{-1} for strictly lower-triangular L [Z, C, C] (any strides with unit inner stride).

    Base blocks of the odd part of C by triangular solves, then doubling: the diagonal blocks of size 2h follow
    from those of size h as [[T0, 0], [T1 L_10 T0, T1]], one batched matmul pair per level (log2 C levels).
    """
    Z, C, _ = L.shape
    sub = C // (C & -C)  # odd part of C: the base block size
    eye = torch.eye(sub, dtype=L.dtype, device=L.device)
    if sub == 1:
        T = eye.expand(Z * C, 1, 1)
    else:
        T = torch.linalg.solve_triangular(
            eye - _diag_blocks(L, sub).reshape(-1, sub, sub), eye.expand(Z * C // sub, sub, sub),
            upper=False, unitriangular=True,
        )
    h = sub
    while h < C:
        n = C // (2 * h)
        T0, T1 = T.view(Z * n, 2, h, h).unbind(1)
        T10 = T1 @ _cross_blocks(L, h).reshape(Z * n, h, h) @ T0
        T = torch.cat((F.pad(T0, (0, h)), torch.cat((T10, T1), 2)), 1)
        h *= 2
    return T.view(Z, C, C)


def _flat_interactions(q: torch.Tensor, kt: torch.Tensor) -> torch.Tensor:
    """A [Z, 2C, 2C] from the queries q = (Ã; R̃) and keys kt = (b; k) e^{-g} [Z, 2C, N]: one product, with the
    entries s >= t (s > t for M) set to zero (masked, not multiplied: they may be large)."""
    C = q.shape[1] // 2
    i = torch.arange(2 * C, device=q.device)
    t, s = i[:, None] % C, i[None, :] % C
    keep = (t > s) | ((t == s) & (i[:, None] >= C))  # strictly lower for A_ab, A_ak; with diagonal for M_rb, M_rk
    return (q @ kt.transpose(1, 2)).masked_fill_(~keep, 0.0)


def _tree_interactions(
    qa: torch.Tensor, kb: torch.Tensor, g: torch.Tensor, gx: torch.Tensor, r: torch.Tensor
) -> torch.Tensor:
    """A [Z, 2C, 2C] bottom-up over the binary tree of each chunk, every exponent <= 0.

    qa, kb: [Z, C, 2, N] queries (a, r') and keys (b, k); g, gx: [Z, C, N]; r [Z, C, N] for the diagonal of M.
    """
    Z, C, _, N = qa.shape
    A = g.new_zeros(Z, 2 * C, 2 * C)
    quads = _quadrants(A)
    sub = C // (C & -C)
    if sub > 1:  # pairs inside each base block, from the exact pairwise decays
        Zb = Z * C // sub
        qs, ks, gs, gxs = (x.reshape(Zb, sub, *x.shape[2:]) for x in (qa, kb, g, gx))
        idx = torch.arange(sub, device=g.device)
        lower = (idx[:, None] > idx[None, :])[:, :, None]  # [t, s, 1]
        dec = torch.exp(torch.where(lower, gxs[:, :, None] - gs[:, None], float("-inf")))  # [Zb, t, s, N]
        blk = torch.einsum("ztqsj,zskj->ztqsk", qs[:, :, :, None] * dec[:, :, None], ks)  # [Zb, t, 2, s, 2]
        for m, (q, key) in zip(quads, _PAIRS):
            _diag_blocks(m, sub).copy_(blk[:, :, q, :, key].reshape(Z, -1, sub, sub))
    rk = (kb.reshape(Z * C, 2, N) @ r.reshape(Z * C, N, 1)).view(Z, C, 2)  # r_t.b_t, r_t.k_t (diagonal of M)
    quads[2].diagonal(0, 1, 2).copy_(rk[..., 0])
    quads[3].diagonal(0, 1, 2).copy_(rk[..., 1])
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
        for m, (q, key) in zip(quads, _PAIRS):
            _cross_blocks(m, h).copy_(cross[:, :, q, :, key].reshape(Z, n, h, h))
        h *= 2
    return A


def _recurrence(
    A: torch.Tensor, q_a: torch.Tensor, q_r: torch.Tensor, k_b: torch.Tensor, k_k: torch.Tensor,
    v: torch.Tensor, decay: torch.Tensor, S: torch.Tensor,
) -> torch.Tensor:
    """Outputs [Z, C, N] of every chunk from the interactions A, Ã, R̃, B̂, K̂, V ([Z, C, N], inner stride 1) and
    e^{g_C} [Z, 1, N]; S [BH, N, N] is the incoming state of the batch. Returns (Y, final state).

    Batched over all chunks: [A_ak V; M_rk V], P = T Ã, W = T A_ak V, V^T K̂. Then the only sequential part, chunk
    by chunk: U = P S^T + W, S <- S diag(e^{g_C}) + U^T B̂ + V^T K̂. Y = R̃ S^T + M_rb U + M_rk V is batched again
    over the states each chunk started from. (unbind rather than indexing: its backward stacks the gradients once
    instead of zero-filling a full-size tensor per chunk.)
    """
    Z, C, N = q_a.shape
    BH = S.shape[0]
    nc = Z // BH
    XV = A[:, :, C:] @ v
    T = unit_lower_inverse(A[:, :C, :C])
    P, W = (x.view(nc, BH, C, N).unbind(0) for x in (T @ q_a, T @ XV[:, :C]))
    VK = (v.transpose(1, 2) @ k_k).view(nc, BH, N, N).unbind(0)
    B_hat, decay = k_b.reshape(nc, BH, C, N).unbind(0), decay.view(nc, BH, 1, N).unbind(0)
    starts, corrections = [], []
    for c in range(nc):
        U = torch.baddbmm(W[c], P[c], S.transpose(1, 2))
        starts.append(S)
        corrections.append(U)
        S = torch.baddbmm(torch.addcmul(VK[c], S, decay[c]), U.transpose(1, 2), B_hat[c])
    S0, U = torch.stack(starts).view(Z, N, N), torch.stack(corrections).view(Z, C, N)
    return torch.baddbmm(torch.baddbmm(XV[:, C:], A[:, C:, :C], U), q_r, S0.transpose(1, 2)), S


def default_chunk_size(T: int) -> int:
    """32 tokens, or 16 for sequences of at most 128 tokens that 16 pads less (a batch of short prefills).

    On CPU with N = 64, 32 is faster than 16 (half the sequential steps) and than 64 (larger C x C products),
    but padding T up to a multiple of 32 can cost more than that: for 16 rows of 78 tokens, 16 runs in 29 ms
    and 32 in 44 ms per layer (96 tokens padded instead of 80). Past ~128 tokens the extra steps win again.
    """
    return 16 if T <= 128 and -(-T // 16) < 2 * -(-T // 32) else 32


def wkv7_chunk(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise-parallel WKV-7 with the semantics of `wkv7_reference` (the math is in the module docstring).

    Inputs [B, T, H, N] with w the log decay (<= 0); state [B, H, N, N] fp32 or None (zeros), never modified.
    Returns (y [B, T, H, N] in r's dtype, final state [B, H, N, N] fp32). All math is fp32, differentiable by
    plain autograd. Any T and chunk_size work: the last chunk is padded with identity tokens (w = 0, all else 0),
    which leave the state unchanged and whose outputs are dropped. Default: `default_chunk_size(T)`.
    """
    B, T, H, N = r.shape
    C = default_chunk_size(T) if chunk_size is None else chunk_size
    if C < 1:
        raise ParameterError(f"chunk_size must be positive, got {chunk_size}")
    nc = max(1, -(-T // C))
    pad = nc * C - T
    Z = nc * B * H  # chunk-major, so that one chunk's slice of the batch is contiguous in the sequential pass

    def timed(x: torch.Tensor) -> torch.Tensor:
        """[B, T, H, N] -> fp32 view [B, nc, C, H, N], time zero-padded to nc * C."""
        x = x.float()
        if pad:
            x = F.pad(x, (0, 0, 0, 0, 0, pad))
        return x.view(B, nc, C, H, N)

    def chunk_major(*xs: torch.Tensor) -> torch.Tensor:
        """[B, nc, C', H, N] tensors -> one [Z, len(xs) * C', N] copy, the tensors stacked along time per chunk."""
        return torch.stack([x.permute(1, 0, 3, 2, 4) for x in xs], 3).view(Z, -1, N)

    # Elementwise work stays in the callers' token-major layout; chunk_major's copies are the only transposes.
    g = timed(w).cumsum(2)
    g_end = g[:, :, -1:]
    if bool(g_end.min() >= -MAX_FLAT_DECAY):
        # Queries decayed from the chunk end and keys to it: e^{g - g_C} in [1, e^D], e^{g_C - g} in [e^{-D}, 1].
        e = torch.exp(g - g_end)
        e_x = torch.cat((torch.exp(-g_end), e[:, :, :-1]), 2)  # e^{gx - g_C}: gx is exactly g_{t-1}
        e_inv = e.reciprocal()
        q = chunk_major(timed(a) * e_x, timed(r) * e)
        kh = chunk_major(timed(b) * e_inv, timed(k) * e_inv)  # B̂; K̂
        A = _flat_interactions(q, kh)
        decay = chunk_major(g_end).exp_()
        q = q * decay  # Ã; R̃ (exponents <= 0 again)
        q_a, q_r, k_b, k_k = q[:, :C], q[:, C:], kh[:, :C], kh[:, C:]
    else:
        g, r_, w_ = (chunk_major(x) for x in (g, timed(r), timed(w)))
        gx = F.pad(g[:, :-1], (0, 0, 1, 0))  # exactly g_{t-1}
        qa = torch.stack((chunk_major(timed(a)), r_ * torch.exp(w_)), 2)  # queries a, r': [Z, C, 2, N]
        kb = torch.stack((chunk_major(timed(b)), chunk_major(timed(k))), 2)  # keys b, k
        A = _tree_interactions(qa, kb, g, gx, r_)
        decay = g[:, -1:].exp()
        q_a, q_r = (qa * torch.exp(gx)[:, :, None]).unbind(2)  # Ã, R̃
        k_b, k_k = (kb * (g[:, -1:] - g).exp_()[:, :, None]).unbind(2)  # B̂, K̂
    S = g.new_zeros(B * H, N, N) if state is None else state.float().reshape(B * H, N, N)
    y, S = _recurrence(A, q_a, q_r, k_b, k_k, chunk_major(timed(v)), decay, S)
    y = y.view(nc, B, H, C, N).permute(1, 0, 3, 2, 4).reshape(B, nc * C, H, N)[:, :T]
    return y.to(r.dtype).contiguous(), S.view(B, H, N, N)
