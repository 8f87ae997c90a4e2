"""The CPU decode step: `RWKV7.decode_step` for a float32 model on CPU, with per-token overhead cut to the bone.

Decoding runs one token through every layer, so besides reading the weights (the GEMVs) a token pays for each
tensor op it dispatches (~3-10 us each). This path computes exactly TimeMix and ChannelMix for T = 1 (same
equations, same parameters) with about 12 ops per layer instead of ~40: LayerNorm + token shift + the
interpolations are one fused op (`shift_mix_`), and everything of TimeMix between the r / k / v and output
projections (the four LoRAs, value residual, WKV state update, GroupNorm, bonus, gate) another (`time_mix_`,
which also flushes denormals: long contexts decay state entries below 1e-38, where x86 arithmetic is ~100x
slower). The matrix-vector products go through each layer's GEMV kernel for float32 `nn.Linear` and
`PackedLinear` layers alike. The state is updated in place, as `decode_step` promises. Where plain torch
measured faster (`kernel_choice`), or on CPUs without SIMD kernels, `RWKV7.decode_step` takes the general path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_kernels
from .quantize import GEMV_MAX_ROWS
from .state import RWKV7State

_NONE = torch.empty(0, dtype=torch.bfloat16)


def decode_kernel(model: nn.Module) -> cpu_kernels.Kernel:
    """The model's measured choice (`model.cpu_decode_kernel`, set by `kernel_choice.prepare`), else the
    unmeasured default: the fused ops where the CPU has a SIMD instruction set, plain torch elsewhere."""
    if model.cpu_decode_kernel is not None:
        return model.cpu_decode_kernel
    widest = cpu_kernels.isa()
    return cpu_kernels.Kernel(widest if widest != "portable" or cpu_kernels.forced_isa() else cpu_kernels.TORCH)


def supported(model: nn.Module, state: RWKV7State) -> bool:
    """Whether this path applies: float32 weights and state on CPU, contiguous state, compiled kernels, and
    not measured slower than plain torch here."""
    return (
        model.emb.weight.device.type == "cpu"
        and model.emb.weight.dtype == torch.float32
        and state.att_x_prev.dtype == torch.float32
        and all(t.is_contiguous() for t in state.tensors())
        and model.config.head_size <= 64
        and cpu_kernels.available()
        and decode_kernel(model).isa != cpu_kernels.TORCH
    )


def linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """layer(x), through the compiled GEMV (or what was measured faster) for a float32 `nn.Linear`."""
    w = getattr(layer, "weight", None)
    if isinstance(layer, nn.Linear) and w.dtype == torch.float32 and w.is_contiguous() and x.shape[0] <= GEMV_MAX_ROWS:
        return cpu_kernels.gemv(x, w, _NONE, _NONE, cpu_kernels.F32, getattr(layer, "kernel", None))
    return layer(x)


def time_mix_weights(att: nn.Module) -> dict[str, torch.Tensor | None]:
    """TimeMix's parameters by the names of `cpu_kernels.time_mix_` (no value LoRA in layer 0)."""
    residual = att.layer_id > 0
    return {
        "w0": att.w0, "w1": att.w1, "w2": att.w2, "a0": att.a0, "a1": att.a1, "a2": att.a2,
        "v0": att.v0 if residual else None, "v1": att.v1 if residual else None, "v2": att.v2 if residual else None,
        "g1": att.g1, "g2": att.g2, "k_k": att.k_k, "k_a": att.k_a, "r_k": att.r_k,
        "ln_w": att.ln_x.weight, "ln_b": att.ln_x.bias,
    }


def decode_step(model: nn.Module, input_ids: torch.Tensor, state: RWKV7State) -> torch.Tensor:
    """One token per row (input_ids [B]); updates `state` in place and returns the final hidden states [B, C]."""
    C = model.config.n_embd
    kernel = decode_kernel(model)
    first = model.blocks[0]
    x = F.layer_norm(model.emb(input_ids.view(-1)), (C,), first.ln0.weight, first.ln0.bias, first.ln0.eps)
    v_first = None
    for i, block in enumerate(model.blocks):
        att, ffn, ln1, ln2 = block.att, block.ffn, block.ln1, block.ln2
        mixes = [att.x_r, att.x_w, att.x_k, att.x_v, att.x_a, att.x_g]
        mixed = cpu_kernels.shift_mix_(x, state.att_x_prev[i], ln1.weight, ln1.bias, ln1.eps, mixes)
        r, k, v = linear(att.receptance, mixed[0]), linear(att.key, mixed[2]), linear(att.value, mixed[3])
        y = cpu_kernels.time_mix_(state.wkv[i], mixed, r, k, v, v_first, time_mix_weights(att), att.ln_x.eps,
                                  kernel.isa, kernel.serial)
        if i == 0:
            v_first = v
        x = x + linear(att.output, y)
        xk = cpu_kernels.shift_mix_(x, state.ffn_x_prev[i], ln2.weight, ln2.bias, ln2.eps, [ffn.x_k])[0]
        x = x + linear(ffn.value, torch.relu_(linear(ffn.key, xk)).square_())
    return F.layer_norm(x, (C,), model.ln_out.weight, model.ln_out.bias, model.ln_out.eps)
