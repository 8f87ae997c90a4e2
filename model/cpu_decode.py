"""The CPU decode step: `RWKV7.decode_step` for a float32 model on CPU, with per-token overhead cut to the bone.

Decoding runs one token through every layer, so besides reading the weights (the GEMVs) a token pays for each
tensor op it dispatches (~3-10 us each). This path computes exactly TimeMix and ChannelMix for T = 1 (same
equations, same parameters) with about half the ops of the sequence path: the whole WKV part of a layer
(normalised key, in-context rate, decay, state update, GroupNorm, bonus) is one fused kernel, which also
flushes denormals (long contexts decay state entries below 1e-38, where x86 arithmetic is ~100x slower); the
matrix-vector products go through the compiled GEMV for float32 `nn.Linear` and `PackedLinear` layers alike.
The state is updated in place, as `decode_step` promises.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_kernels
from .quantize import GEMV_MAX_ROWS
from .state import RWKV7State

_NONE = torch.empty(0, dtype=torch.bfloat16)


def supported(model: nn.Module, state: RWKV7State) -> bool:
    """Whether this path applies: float32 weights and state on CPU, contiguous state, compiled kernels."""
    return (
        model.emb.weight.device.type == "cpu"
        and model.emb.weight.dtype == torch.float32
        and state.att_x_prev.dtype == torch.float32
        and all(t.is_contiguous() for t in state.tensors())
        and model.config.head_size <= 64
        and cpu_kernels.available()
    )


def linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """layer(x), through the compiled GEMV for a contiguous float32 `nn.Linear` (faster than torch's at M = 1)."""
    w = getattr(layer, "weight", None)
    if isinstance(layer, nn.Linear) and w.dtype == torch.float32 and w.is_contiguous() and x.shape[0] <= GEMV_MAX_ROWS:
        return cpu_kernels.gemv(x, w, _NONE, _NONE, cpu_kernels.F32)
    return layer(x)


def decode_step(model: nn.Module, input_ids: torch.Tensor, state: RWKV7State) -> torch.Tensor:
    """One token per row (input_ids [B]); updates `state` in place and returns the final hidden states [B, C]."""
    C = model.config.n_embd
    first = model.blocks[0]
    x = F.layer_norm(model.emb(input_ids.view(-1)), (C,), first.ln0.weight, first.ln0.bias, first.ln0.eps)
    v_first = None
    for i, block in enumerate(model.blocks):
        att, ffn = block.att, block.ffn
        xa = F.layer_norm(x, (C,), block.ln1.weight, block.ln1.bias, block.ln1.eps)
        dx = state.att_x_prev[i] - xa
        state.att_x_prev[i].copy_(xa)
        mixes = torch.cat((att.x_r, att.x_w, att.x_k, att.x_v, att.x_a, att.x_g)).view(6, 1, C)
        xr, xw, xk, xv, xia, xg = torch.addcmul(xa, dx, mixes).unbind(0)
        r, k, v = linear(att.receptance, xr), linear(att.key, xk), linear(att.value, xv)
        d = torch.addmm(att.w0.view(1, C), torch.tanh(xw @ att.w1), att.w2)
        iclr = torch.sigmoid(torch.addmm(att.a0.view(1, C), xia @ att.a1, att.a2))
        g = torch.sigmoid(xg @ att.g1) @ att.g2
        if i == 0:
            v_first = v
        else:
            gate = torch.sigmoid(torch.addmm(att.v0.view(1, C), xv @ att.v1, att.v2))
            v = torch.addcmul(v, v_first - v, gate)
        y = cpu_kernels.wkv_step_(
            state.wkv[i], r, d, k, v, iclr, att.k_k.view(C), att.k_a.view(C), att.r_k, att.ln_x.weight,
            att.ln_x.bias, eps=att.ln_x.eps,
        )
        x = x + linear(att.output, y * g)
        xf = F.layer_norm(x, (C,), block.ln2.weight, block.ln2.bias, block.ln2.eps)
        dx = state.ffn_x_prev[i] - xf
        state.ffn_x_prev[i].copy_(xf)
        hidden = torch.relu(linear(ffn.key, torch.addcmul(xf, dx, ffn.x_k.view(1, C))))
        x = x + linear(ffn.value, hidden.square_())
    return F.layer_norm(x, (C,), model.ln_out.weight, model.ln_out.bias, model.ln_out.eps)
