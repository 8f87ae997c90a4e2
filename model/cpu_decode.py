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

Up to GEMV_MAX_ROWS rows (batch-1 decoding and the engine's usual batches) one op, `decode_layers_`, runs every
layer in C++: the ~15 op dispatches per layer from Python cost a third of a 0.1B int8 step. More rows take the
per-layer loop below, whose Linears then run the GEMMs `kernel_choice` measured (the dispatch is small beside
them); it is also what `decode_layers_` is tested against.

`decode_layers_`'s operands (45 tensors per layer) are gathered once per model and kept: reading them through
module attributes took 0.5-0.9 ms, 7-12% of a 0.1B int8 step. Whatever could swap one of those tensors for
another bumps a generation counter that the kept list is checked against: registering a parameter, buffer or
submodule on any module (assignment, `load_state_dict(assign=True)`), `RWKV7._apply` (`.to()`, `.float()`, ...)
and a new kernel choice (`kernel_choice.assign`). In-place updates (`copy_`, an optimizer step) need nothing:
the op reads the tensors' memory on every call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as nn_module

from . import cpu_kernels
from .quantize import GEMV_MAX_ROWS, gemv_operands
from .state import RWKV7State

_NONE = torch.empty(0, dtype=torch.bfloat16)
_generation = 0  # see the module docstring


def invalidate(*_: object) -> None:
    """Forget every model's gathered `decode_layers_` operands (a registration hook; returns None)."""
    global _generation
    _generation += 1


nn_module.register_module_parameter_registration_hook(invalidate)
nn_module.register_module_buffer_registration_hook(invalidate)
nn_module.register_module_module_registration_hook(invalidate)


def decode_kernel(model: nn.Module) -> cpu_kernels.Kernel:
    """The model's measured choice (`model.cpu_decode_kernel`, set by `kernel_choice.prepare`), else the
    unmeasured default: the fused ops where the CPU has a SIMD instruction set, plain torch elsewhere."""
    if model.cpu_decode_kernel is not None:
        return model.cpu_decode_kernel
    widest = cpu_kernels.isa()
    return cpu_kernels.Kernel(widest if widest != "portable" or cpu_kernels.forced_isa() else cpu_kernels.TORCH)


def fused_ops_apply(model: nn.Module) -> bool:
    """Whether the compiled fused ops can run this model's layers here (decode and `cpu_prefill` alike): heads of
    at most 64, the kernels built, and not measured slower than plain torch."""
    return (
        model.config.head_size <= 64
        and cpu_kernels.available()
        and decode_kernel(model).isa != cpu_kernels.TORCH
    )


def supported(model: nn.Module, state: RWKV7State) -> bool:
    """Whether this path applies: float32 weights and state on CPU, contiguous state, and `fused_ops_apply`."""
    return (
        model.emb.weight.device.type == "cpu"
        and model.emb.weight.dtype == torch.float32
        and state.att_x_prev.dtype == torch.float32
        and all(t.is_contiguous() for t in state.tensors())
        and fused_ops_apply(model)
    )


def linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """layer(x), through the layer's compiled GEMV (or what was measured faster) for few rows."""
    gemv = gemv_operands(layer)
    if gemv is not None and x.shape[0] <= GEMV_MAX_ROWS:
        return cpu_kernels.gemv(x, *gemv[1], gemv[0], getattr(layer, "kernel", None))
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


def _linear_operands(layer: nn.Module) -> tuple[tuple[torch.Tensor, ...], tuple[int, ...]] | None:
    """A Linear's (weight, scales, minimums) and its `decode_layers_` plan (format, instruction set or -1 for
    torch, streams, prefetch, serial); None if it has no GEMV (`quantize.gemv_operands`)."""
    gemv = gemv_operands(layer)
    if gemv is None:
        return None
    fmt, operands = gemv
    k = getattr(layer, "kernel", None) or cpu_kernels.default_kernel(fmt)  # a plain nn.Linear has none
    isa = -1 if k.isa == cpu_kernels.TORCH else cpu_kernels.ISA_CODES[k.isa]
    return operands, (k.format_code(fmt), isa, k.streams, k.prefetch, int(k.serial))


def layer_operands(model: nn.Module) -> tuple[list[torch.Tensor], list[int], list[float]] | None:
    """`decode_layers_`'s (weights, plan, eps) for the model's current parameters and kernels (in the order
    csrc/ops.cpp documents), or None where a Linear has no GEMV."""
    weights: list[torch.Tensor] = []
    plan: list[int] = []
    eps: list[float] = []
    for block in model.blocks:
        att, ffn = block.att, block.ffn
        tm = time_mix_weights(att)
        weights += [block.ln1.weight, block.ln1.bias, att.x_r, att.x_w, att.x_k, att.x_v, att.x_a, att.x_g,
                    *(_NONE if t is None else t for t in tm.values()), block.ln2.weight, block.ln2.bias, ffn.x_k]
        for layer in (att.receptance, att.key, att.value, att.output, ffn.key, ffn.value):
            found = _linear_operands(layer)
            if found is None:
                return None
            weights += found[0]
            plan += found[1]
        eps += [block.ln1.eps, block.ln2.eps, att.ln_x.eps]
    return weights, plan, eps


def _kept_operands(model: nn.Module) -> tuple[list[torch.Tensor], list[int], list[float]] | None:
    kept = model.cpu_decode_operands
    if kept is None or kept[0] != _generation:
        kept = model.cpu_decode_operands = (_generation, layer_operands(model))
    return kept[1]


def decode_step(model: nn.Module, input_ids: torch.Tensor, state: RWKV7State) -> torch.Tensor:
    """One token per row (input_ids [B]); updates `state` in place and returns the final hidden states [B, C]."""
    C = model.config.n_embd
    kernel = decode_kernel(model)
    first = model.blocks[0]
    x = F.layer_norm(model.emb(input_ids.view(-1)), (C,), first.ln0.weight, first.ln0.bias, first.ln0.eps)
    operands = _kept_operands(model) if x.shape[0] <= GEMV_MAX_ROWS else None
    if operands is not None:
        x = cpu_kernels.decode_layers_(x, state.att_x_prev, state.wkv, state.ffn_x_prev, *operands, kernel.isa,
                                       kernel.serial)
        return F.layer_norm(x, (C,), model.ln_out.weight, model.ln_out.bias, model.ln_out.eps)
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
