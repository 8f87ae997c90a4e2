"""The fused ops of the CPU decode step (`model/cpu_decode.py`) against the equations written out in plain
torch; whole decode steps against the `rwkv` package are in test_model_oracle.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from rwkv7_provider.kernels import wkv7_reference
from rwkv7_provider.model import RWKV7, cpu_decode, cpu_kernels, kernel_choice
from rwkv7_provider.model.cpu_kernels import TORCH, Kernel
from rwkv7_provider.model.quantize import FORMATS, PackedLinear

from rwkv7_provider.testing import WIDER, random_state_dict

pytestmark = pytest.mark.skipif(not cpu_kernels.available(), reason="no C++ compiler")


def test_shift_mix_is_layer_norm_and_token_shift():
    g = torch.Generator().manual_seed(0)
    B, C = 3, 192
    x, prev = torch.randn(B, C, generator=g) * 2 + 0.5, torch.randn(B, C, generator=g)
    w, b = torch.rand(C, generator=g) + 0.5, torch.randn(C, generator=g) * 0.1
    mixes = [torch.rand(1, 1, C, generator=g) for _ in range(3)]
    xn = F.layer_norm(x, (C,), w, b, 1e-5)
    want = torch.stack([xn + (prev - xn) * m.view(C) for m in mixes])
    got_prev = prev.clone()
    got = cpu_kernels.shift_mix_(x, got_prev, w, b, 1e-5, mixes)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_prev, xn, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("isa", sorted(cpu_kernels.ISA_CODES))
@pytest.mark.parametrize("residual", [False, True], ids=["layer0", "value_residual"])
@pytest.mark.parametrize("N", [64, 40], ids=["head64", "head40"])  # 40: vector loops with a scalar tail
@pytest.mark.parametrize("lora_dtype", [torch.float32, torch.bfloat16], ids=["lora_f32", "lora_bf16"])
def test_time_mix_matches_the_equations(residual, isa, N, lora_dtype):
    """TimeMix between the r/k/v and output projections, written out with the sequential WKV reference, for
    each instruction set this CPU runs, with the LoRA matrices in float32 or (compressed models) bf16."""
    if isa not in cpu_kernels.status().isas:
        pytest.skip(f"this CPU does not run {isa}")
    g = torch.Generator().manual_seed(1)
    B, H = 3, 2
    C = H * N

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    state = rand(B, H, N, N, scale=0.1)
    mixed, r, k, v, v_first = rand(6, B, C), rand(B, C), rand(B, C), rand(B, C), rand(B, C)
    w0, a0, v0 = rand(1, 1, C, scale=0.5), rand(1, 1, C, scale=0.5), rand(1, 1, C, scale=0.5)
    w1, w2, a1, a2 = rand(C, 16, scale=0.1), rand(16, C, scale=0.1), rand(C, 8, scale=0.1), rand(8, C, scale=0.1)
    v1, v2, g1, g2 = rand(C, 12, scale=0.1), rand(12, C, scale=0.1), rand(C, 24, scale=0.1), rand(24, C, scale=0.1)
    stored = [t.to(lora_dtype) for t in (w1, w2, a1, a2, v1, v2, g1, g2)]  # what the op reads
    w1, w2, a1, a2, v1, v2, g1, g2 = (t.float() for t in stored)  # the same values for the equations
    k_k, k_a = rand(1, 1, C, scale=0.1) + 0.85, rand(1, 1, C, scale=0.1) + 1
    r_k, ln_w, ln_b = rand(H, N, scale=0.3), rand(C, scale=0.1) + 1, rand(C, scale=0.1)

    _, xw, _, xv, xa, xg = mixed
    d = w0.view(C) + torch.tanh(xw @ w1) @ w2
    iclr = torch.sigmoid(a0.view(C) + (xa @ a1) @ a2)
    gate = torch.sigmoid(xg @ g1) @ g2
    v_in = v + (v_first - v) * torch.sigmoid(v0.view(C) + (xv @ v1) @ v2) if residual else v
    kk = F.normalize((k * k_k.view(C)).view(B, H, N), dim=-1, eps=1e-12).view(B, C)
    k_mod = k * (1 + (iclr - 1) * k_a.view(C))
    log_w = -math.exp(-0.5) * torch.sigmoid(d)
    heads = [t.reshape(B, 1, H, N) for t in (r, log_w, k_mod, v_in, -kk, kk * iclr)]
    y, want_state = wkv7_reference(*heads, state)
    y = F.group_norm(y.reshape(B, C), H, ln_w, ln_b, eps=64e-5)
    y = y + ((r * k_mod).view(B, H, N) * r_k).sum(-1, keepdim=True).mul(v_in.view(B, H, N)).view(B, C)
    want = y * gate

    w1, w2, a1, a2, v1, v2, g1, g2 = stored
    lora_v = [v0, v1, v2] if residual else [None] * 3
    weights = {"w0": w0, "w1": w1, "w2": w2, "a0": a0, "a1": a1, "a2": a2, "g1": g1, "g2": g2, "k_k": k_k,
               "k_a": k_a, "r_k": r_k, "ln_w": ln_w, "ln_b": ln_b, **dict(zip(("v0", "v1", "v2"), lora_v))}
    got_state = state.clone()
    got = cpu_kernels.time_mix_(got_state, mixed, r, k, v, v_first if residual else None, weights, 64e-5, isa)
    torch.testing.assert_close(got_state, want_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    serial_state = state.clone()  # the same in the calling thread alone
    serial = cpu_kernels.time_mix_(serial_state, mixed, r, k, v, v_first if residual else None, weights, 64e-5, isa, True)
    torch.testing.assert_close(serial_state, got_state, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(serial, got, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- the whole step in one op (decode_layers_)


def _packed_model(tmp_path, fmt, seed=3):
    path = tmp_path / "m.pth"
    torch.save(random_state_dict(WIDER, seed=seed, layer0_v=True), path)
    return RWKV7.from_pretrained(path, quantize=fmt)


def _steps(model, ids, state, steps=3):
    with torch.inference_mode():
        return torch.stack([cpu_decode.decode_step(model, ids + t, state) for t in range(steps)])


@pytest.mark.parametrize("fmt", [None, *sorted(FORMATS)])
@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("isa", sorted(cpu_kernels.ISA_CODES))
def test_one_op_decode_step_matches_the_per_layer_ops(tmp_path, monkeypatch, fmt, rows, isa):
    """`decode_layers_` against the per-layer loop with the same kernels (the path of more than GEMV_MAX_ROWS
    rows): the same numbers and the same state, in every weight format and instruction set, and float32
    Linears measured faster in plain torch included."""
    if isa not in cpu_kernels.status().isas:
        pytest.skip(f"this CPU does not run {isa}")
    model = _packed_model(tmp_path, fmt)
    groups = kernel_choice.gemv_groups(model)
    gemv = {g.name: Kernel(TORCH if g.fmt == cpu_kernels.F32 and i % 2 else isa, streams=2) for i, g in enumerate(groups)}
    kernel_choice.assign(model, groups, Kernel(isa), gemv)
    ids = torch.arange(rows) + 5
    calls = []
    real = cpu_kernels.decode_layers_
    monkeypatch.setattr(cpu_kernels, "decode_layers_", lambda *a: calls.append(1) or real(*a))
    fused_state = model.zero_state(rows)
    fused = _steps(model, ids, fused_state)
    assert len(calls) == 3
    monkeypatch.setattr(cpu_decode, "GEMV_MAX_ROWS", 0)  # every batch is "large": the per-layer loop
    loop_state = model.zero_state(rows)
    loop = _steps(model, ids, loop_state)
    assert len(calls) == 3
    torch.testing.assert_close(fused, loop, atol=1e-6, rtol=1e-6)
    for a, b in zip(fused_state.tensors(), loop_state.tensors()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_the_kept_operands_follow_new_weights_and_kernels(tmp_path, monkeypatch):
    """The operands gathered at the first step are not reused once a weight tensor is replaced (parameter or
    submodule assignment, `load_state_dict(assign=True)`) or the kernels change."""
    model = _packed_model(tmp_path, None)
    ids = torch.tensor([7])

    def step():
        return _steps(model, ids, model.zero_state(1), steps=1)

    def reference():  # the per-layer loop, which reads every weight afresh
        with monkeypatch.context() as m:
            m.setattr(cpu_decode, "GEMV_MAX_ROWS", 0)
            return step()

    before = step()
    block = model.blocks[1]
    block.ffn.value.weight = torch.nn.Parameter(block.ffn.value.weight * 2)
    after_param = step()
    assert not torch.equal(after_param, before)
    torch.testing.assert_close(after_param, reference(), atol=1e-6, rtol=1e-6)
    block.att.key = PackedLinear.from_dense(block.att.key.weight.detach() * -1, "int8")
    after_module = step()
    torch.testing.assert_close(after_module, reference(), atol=1e-6, rtol=1e-6)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["blocks.0.att.output.weight"] *= 3
    model.load_state_dict(state, assign=True)
    after_load = step()
    assert not torch.equal(after_load, after_module)
    torch.testing.assert_close(after_load, reference(), atol=1e-6, rtol=1e-6)

    groups = kernel_choice.gemv_groups(model)
    isa = cpu_kernels.status().isas[0]
    kernel_choice.assign(model, groups, Kernel(isa), {g.name: Kernel(isa, streams=1) for g in groups})
    step()
    plan = model.cpu_decode_operands[1][1]
    assert set(plan[1::5]) == {cpu_kernels.ISA_CODES[isa]} and set(plan[2::5]) == {1}
