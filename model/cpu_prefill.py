"""The CPU prefill: `RWKV7.forward_hidden`'s layers for float32 activations on CPU, with fused ops between the GEMMs.

A warm rail check computes a few dozen tokens; besides its GEMMs each layer dispatched ~45 small tensor ops
(LayerNorm, token shift, interpolations, LoRA activations, key normalisation, WKV, GroupNorm, bonus, gate), each
a few to tens of microseconds and a parallel region. That was over half of the embedded guard's forward at 50
tokens and a fifth of the 0.1B's. Here a layer is ~12 ops: `shift_mix_seq` (LayerNorm + token shift + the
interpolations), the r / k / v projections (each layer's own Linear: its measured GEMM, or the GEMV for few
rows), `time_mix_seq` (the LoRAs as GEMMs, then the decode step's per-token equations for every token in order,
each (row, head) state in L1), the output projection and the FFN. Same equations as TimeMix / ChannelMix, same
parameters; rows of different lengths run packed (`cu_seqlens`), as in the general path. The input state is
never modified. Training (autograd), other dtypes, and machines where the readable layers measured faster at load
(`kernel_choice`, a 24-token prefill timed both ways) take the general path.
"""

from __future__ import annotations

import torch
from torch import nn

from . import cpu_kernels
from .cpu_decode import decode_kernel, fused_ops_apply, time_mix_weights
from .state import RWKV7State


def supported(model: nn.Module, x: torch.Tensor, state: RWKV7State) -> bool:
    """Whether this path applies: inference on CPU with float32 activations and state, the fused ops usable
    here (`cpu_decode.fused_ops_apply`), and this path not measured slower than the readable layers
    (`kernel_choice`)."""
    return (
        model.cpu_prefill_fused is not False
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and state.att_x_prev.dtype == torch.float32
        and not torch.is_grad_enabled()
        and fused_ops_apply(model)
    )


def forward_layers(
    model: nn.Module, x: torch.Tensor, state: RWKV7State, cu_seqlens: torch.Tensor | None = None
) -> tuple[torch.Tensor, RWKV7State]:
    """x [B, T, C] after ln0 (or packed rows [1, n, C] with `cu_seqlens`) through every layer -> (x before ln_out,
    same shape; the state after each row's tokens)."""
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    kernel = decode_kernel(model)
    v_first = None
    new = []
    for i, block in enumerate(model.blocks):
        att, ffn, ln1, ln2 = block.att, block.ffn, block.ln1, block.ln2
        mixes = [att.x_r, att.x_w, att.x_k, att.x_v, att.x_a, att.x_g]
        mixed, att_prev = cpu_kernels.shift_mix_seq(x, state.att_x_prev[i].contiguous(), ln1.weight, ln1.bias,
                                                    ln1.eps, mixes, cu_seqlens)
        r, k, v = att.receptance(mixed[0]), att.key(mixed[2]), att.value(mixed[3])
        y, wkv = cpu_kernels.time_mix_seq(state.wkv[i], mixed, r, k, v, v_first, time_mix_weights(att),
                                          att.ln_x.eps, cu_seqlens, kernel.isa, kernel.serial)
        if i == 0:
            v_first = v
        x = x + att.output(y)
        xk, ffn_prev = cpu_kernels.shift_mix_seq(x, state.ffn_x_prev[i].contiguous(), ln2.weight, ln2.bias, ln2.eps,
                                                 [ffn.x_k], cu_seqlens)
        x = x + ffn.value(torch.relu_(ffn.key(xk[0])).square_())
        new.append((att_prev, wkv, ffn_prev))
    att_x_prev, wkv, ffn_x_prev = (torch.stack(parts) for parts in zip(*new))
    return x.view(shape), RWKV7State(att_x_prev, wkv, ffn_x_prev)
