"""Sequential WKV-7 recurrence: the ground truth every other implementation is tested against.

Shapes (all implementations share them):
    r, w, k, v, a, b: [B, T, H, N]   w is the LOG decay (<= 0), so the decay is exp(w)
    state:            [B, H, N, N]   float32, S[b, h, i, j] with i = value index, j = key index
Per token, per head (row vectors, S before the update on the right-hand side):
    S = S * exp(w)[None, :] + (S @ a)[:, None] * b[None, :] + v[:, None] * k[None, :]
    y = S @ r
In RWKV-7, a = -kk and b = kk * iclr (see docs/rwkv7.md).
"""

from __future__ import annotations

import torch


def wkv7_reference(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token float32 recurrence. Returns (y [B,T,H,N] in r's dtype, final state [B,H,N,N] fp32).

    Also the T = 1 decode path on CPU. Differentiable (autograd through the loop), but slow for long T.
    """
    B, T, H, N = r.shape
    out_dtype = r.dtype
    if state is None:
        state = r.new_zeros(B, H, N, N, dtype=torch.float32)
    S = state.float()
    r, w, k, v, a, b = (t.float() for t in (r, w, k, v, a, b))
    decay = torch.exp(w)
    ys = []
    for t in range(T):
        sa = S @ a[:, t, :, :, None]  # [B, H, N, 1]: S before the update
        S = (
            S * decay[:, t, :, None, :]
            + sa * b[:, t, :, None, :]
            + v[:, t, :, :, None] * k[:, t, :, None, :]
        )
        ys.append((S @ r[:, t, :, :, None]).squeeze(-1))
    y = torch.stack(ys, dim=1) if ys else r.new_zeros(B, 0, H, N)
    return y.to(out_dtype), S
