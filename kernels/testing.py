"""Random WKV-7 inputs shaped and scaled the way the RWKV-7 time-mix block builds them (docs/rwkv7.md).

Shared by the kernel tests and `bench/gpu_check.py`, so every kernel is checked on the same kind of input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def wkv7_inputs(
    B: int, T: int, H: int, N: int, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
    with_state: bool = True, seed: int = 0,
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """([r, w, k, v, a, b] of shape [B, T, H, N] in `dtype`, fp32 state [B, H, N, N] or None).

    Log decay w lies in [-0.6065, 0], a = -kk and b = kk * iclr with kk L2-normalised per head. Drawn on the
    CPU from a seeded generator, so a seed gives the same values on every device.
    """
    g = torch.Generator().manual_seed(seed)
    shape = (B, T, H, N)

    def randn(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=g)

    w = -0.6065306597 * torch.sigmoid(randn(*shape))
    kk = F.normalize(randn(*shape), dim=-1)
    a, b = -kk, kk * torch.sigmoid(randn(*shape))
    r, k, v = (randn(*shape) * 0.5 for _ in range(3))
    state = randn(B, H, N, N).mul(0.5).to(device) if with_state else None
    return [t.to(device=device, dtype=dtype) for t in (r, w, k, v, a, b)], state
