"""The GPU decode step: `RWKV7.decode_step` on a CUDA device, with fused Triton kernels between the GEMMs.

The same equations as TimeMix and ChannelMix for T = 1, in about 23 kernels per layer instead of ~54: the
matrix products stay with cuBLAS (`nn.Linear` and the LoRAs), everything elementwise around them is one of
`kernels/triton_mix.py`'s three kernels, and the WKV step is the fused in-place decode kernel. A CUDA graph
of the step replays one node per kernel, so the node count is what a small model's step costs. The state is
updated in place, as `decode_step` promises. RWKV7_WKV_IMPL set to anything but "triton" keeps the general
path (the comparison runs of `bench/gpu_check.py` use that).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import triton_available
from .state import RWKV7State


def supported(model: nn.Module, state: RWKV7State) -> bool:
    """CUDA weights and state, Triton importable, no autograd, heads of 64 and per-layer contiguous state."""
    return (
        model.emb.weight.is_cuda
        and not torch.is_grad_enabled()
        and model.config.head_size == 64
        and os.environ.get("RWKV7_WKV_IMPL", "triton") == "triton"
        and triton_available()
        and all(t[0].is_contiguous() for t in state.tensors())
    )


def decode_step(model: nn.Module, input_ids: torch.Tensor, state: RWKV7State) -> torch.Tensor:
    """One token per row (input_ids [B]); updates `state` in place and returns the final hidden states [B, C]."""
    # imported here: the package needs Triton only on this path, and rwkv7.py imports this module
    from ..kernels.triton_mix import shift_mix_, time_mix_out, time_mix_prep
    from ..kernels.triton_ops import on_device, wkv7_decode_
    from .rwkv7 import lora

    C, H = model.config.n_embd, model.config.n_head
    heads = (input_ids.numel(), H, C // H)  # the WKV step's view of a [B, C] tensor
    first = model.blocks[0]
    with on_device(model.emb.weight):  # Triton launches on the current device, which may be another GPU
        x = F.layer_norm(model.emb(input_ids.view(-1)), (C,), first.ln0.weight, first.ln0.bias, first.ln0.eps)
        dx, v_first = None, None
        for i, block in enumerate(model.blocks):
            att, ffn = block.att, block.ffn
            mixes = [att.x_r, att.x_w, att.x_k, att.x_v, att.x_a, att.x_g]
            x, (xr, xw, xk, xv, xa, xg) = shift_mix_(x, dx, state.att_x_prev[i], block.ln1, mixes)
            r, k, v = att.receptance(xr), att.key(xk), att.value(xv)
            w_pre = lora(xw, att.w1, att.w2, att.w0, torch.tanh)
            a_pre = lora(xa, att.a1, att.a2, att.a0)
            v_pre = lora(xv, att.v1, att.v2, att.v0) if i > 0 else None
            g = lora(xg, att.g1, att.g2, act=torch.sigmoid)
            w, k, v, a, b = time_mix_prep(k, v, w_pre, a_pre, v_pre, v_first, att.k_k, att.k_a, H)
            if i == 0:
                v_first = v
            y = wkv7_decode_(*(t.view(heads) for t in (r, w, k, v, a, b)), state.wkv[i]).view_as(r)
            dx = att.output(time_mix_out(y, r, k, v, g, att.r_k, att.ln_x))
            x, (xk,) = shift_mix_(x, dx, state.ffn_x_prev[i], block.ln2, [ffn.x_k])
            dx = ffn.value(torch.relu(ffn.key(xk)).square())
        return F.layer_norm(x + dx, (C,), model.ln_out.weight, model.ln_out.bias, model.ln_out.eps)
