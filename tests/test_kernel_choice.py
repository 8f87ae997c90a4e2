"""Which kernels a CPU model runs (`model/kernel_choice.py`), the head through the GEMV in the engine's decode
and scoring, and `forward` with one token on the fused decode path."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from rwkv7_provider.model import RWKV7, cpu_decode, cpu_kernels, kernel_choice
from rwkv7_provider.model.cpu_kernels import TORCH, Kernel
from rwkv7_provider.model.quantize import GemvLinear, PackedLinear

from rwkv7_provider.testing import SMALL, random_state_dict

pytestmark = pytest.mark.skipif(not cpu_kernels.available(), reason="no C++ compiler")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("choice") / "model.pth"
    torch.save(random_state_dict(SMALL, seed=3), path)
    return path


@pytest.fixture
def choices_file(tmp_path, monkeypatch):
    """A private choices.json (the real one beside the library is shared by every test process)."""
    path = tmp_path / "choices.json"
    monkeypatch.setattr(kernel_choice, "_choices_path", lambda: path)
    monkeypatch.delenv("RWKV7_CPU_ISA", raising=False)
    return path


def gemv_layers(model: RWKV7) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, (GemvLinear, PackedLinear))]


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_prepare_measures_every_gemv_group_once_then_uses_the_cache(checkpoint, choices_file, quantize):
    model = RWKV7.from_pretrained(checkpoint, quantize=quantize)
    kernel_choice.prepare(model, measure_again=True)
    assert not kernel_choice.last_was_cached()
    groups = kernel_choice.gemv_groups(model)
    assert len(groups) == 4  # r/k/v/o share a shape, then the two FFN matrices and the head
    assert sum(len(g.layers) for g in groups) == len(gemv_layers(model)) == 6 * SMALL.n_layer + 1
    report = kernel_choice.last_report()
    assert report.count("GEMV ") == len(groups) and "decode " in report and "ms/token" in report
    chosen = {id(m): m.kernel for m in gemv_layers(model)}
    assert all(isinstance(k, Kernel) for k in chosen.values())
    if quantize:  # compressed weights have no plain-torch GEMV or decode
        assert TORCH not in {k.isa for k in chosen.values()} and model.cpu_decode_kernel.isa != TORCH
    assert model.cpu_decode_kernel.isa in (TORCH, *cpu_kernels.status().isas)
    stored = json.loads(choices_file.read_text())
    assert len(stored) == 1 and next(iter(stored.values()))["decode"] == str(model.cpu_decode_kernel)
    assert isinstance(model.cpu_prefill_fused, bool)
    assert next(iter(stored.values()))["prefill"] == ("fused" if model.cpu_prefill_fused else "readable")

    for layer in gemv_layers(model):
        layer.kernel = None
    kernel_choice.prepare(model)
    assert kernel_choice.last_was_cached()
    assert {id(m): m.kernel for m in gemv_layers(model)} == chosen


def test_a_cached_choice_naming_a_kernel_this_machine_lacks_is_measured_again(checkpoint, choices_file):
    model = RWKV7.from_pretrained(checkpoint)
    kernel_choice.prepare(model, measure_again=True)
    stored = json.loads(choices_file.read_text())
    for entry in stored.values():
        entry["decode"] = "avx1024"
    choices_file.write_text(json.dumps(stored))
    kernel_choice.prepare(model)
    assert not kernel_choice.last_was_cached()
    assert model.cpu_decode_kernel.isa != "avx1024"


def test_a_cached_choice_of_int16_activations_for_float_weights_is_measured_again(checkpoint, choices_file):
    model = RWKV7.from_pretrained(checkpoint)  # float32: int16 activations (a16) run int8 weights only
    kernel_choice.prepare(model, measure_again=True)
    stored = json.loads(choices_file.read_text())
    for entry in stored.values():
        entry["gemv"] = {name: f"{cpu_kernels.isa()}/4+a16" for name in entry["gemv"]}
    choices_file.write_text(json.dumps(stored))
    kernel_choice.prepare(model)
    assert not kernel_choice.last_was_cached()
    assert not any(layer.kernel.a16 for layer in gemv_layers(model))


def test_plain_torch_wins_where_it_measures_fastest(checkpoint, choices_file, monkeypatch):
    """Never slower than plain torch: when the general path's decode step is the fastest, it is chosen, and
    the model then decodes through it (same results)."""
    model = RWKV7.from_pretrained(checkpoint)
    fused = decode_logits(model, [5, 9, 2, 7])
    real = kernel_choice._time_decode
    monkeypatch.setattr(kernel_choice, "_time_decode",
                        lambda m, g, plans: {name: (1.0 if name == TORCH else 2.0) for name in real(m, g, plans)})
    kernel_choice.prepare(model, measure_again=True)
    assert model.cpu_decode_kernel == Kernel(TORCH)
    assert {m.kernel for m in gemv_layers(model)} == {Kernel(TORCH)}
    assert not cpu_decode.supported(model, model.zero_state(1))
    torch.testing.assert_close(decode_logits(model, [5, 9, 2, 7]), fused, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("faster", [True, False], ids=["fused", "readable"])
def test_the_prefill_takes_the_path_that_measures_faster(checkpoint, choices_file, monkeypatch, faster):
    """The fused CPU prefill is kept where it is not slower than the readable layers, and the choice is cached;
    either path gives the same hidden states."""
    model = RWKV7.from_pretrained(checkpoint)
    ids = torch.randint(1, SMALL.vocab_size, (2, 30), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        want, _ = model.forward_hidden(ids)
    monkeypatch.setattr(kernel_choice, "_time_prefill", lambda m: {faster: 1.0, not faster: 2.0})
    kernel_choice.prepare(model, measure_again=True)
    assert model.cpu_prefill_fused is faster
    assert ("prefill 24 tokens fused" if faster else "prefill 24 tokens readable") in kernel_choice.last_report()
    calls = []
    real = cpu_kernels.time_mix_seq
    monkeypatch.setattr(cpu_kernels, "time_mix_seq", lambda *a: calls.append(1) or real(*a))
    with torch.inference_mode():
        got, _ = model.forward_hidden(ids)
    assert len(calls) == (SMALL.n_layer if faster else 0)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    model.cpu_prefill_fused = None
    kernel_choice.prepare(model)
    assert kernel_choice.last_was_cached() and model.cpu_prefill_fused is faster


@pytest.mark.parametrize(("serial_ms", "chosen"), [(9.0, "avx2"), (5.0, "avx2+serial")])
def test_a_one_thread_plan_must_win_clearly(checkpoint, choices_file, monkeypatch, serial_ms, chosen):
    """A one-thread decode plan that is only a little faster (a busy moment while measuring) loses to its
    threaded twin; one that is much faster (the other cores really are taken) wins."""
    if "avx2" not in cpu_kernels.status().isas:
        pytest.skip("this CPU does not run avx2")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # one-thread plans are candidates only with more threads
    try:
        model = RWKV7.from_pretrained(checkpoint)
        real = kernel_choice._time_decode
        times = {"avx2": 10.0, "avx2+serial": serial_ms}
        monkeypatch.setattr(kernel_choice, "_time_decode",
                            lambda m, g, plans: {name: times.get(name, 50.0) / 1e3 for name in real(m, g, plans)})
        kernel_choice.prepare(model, measure_again=True)
    finally:
        torch.set_num_threads(threads)
    assert model.cpu_decode_kernel == Kernel("avx2", serial=chosen.endswith("+serial"))


def decode_logits(model: RWKV7, ids: list[int]) -> torch.Tensor:
    state = model.zero_state(1)
    with torch.inference_mode():
        return torch.cat([model.head(model.decode_step(torch.tensor([t]), state)) for t in ids])


def test_forced_instruction_set_is_used_everywhere_unmeasured(checkpoint, choices_file, monkeypatch):
    isa = cpu_kernels.status().isas[0]  # portable: runs everywhere
    monkeypatch.setenv("RWKV7_CPU_ISA", isa)
    model = RWKV7.from_pretrained(checkpoint, quantize="q4")
    assert model.cpu_decode_kernel == Kernel(isa) and {m.kernel for m in gemv_layers(model)} == {Kernel(isa)}
    assert f"RWKV7_CPU_ISA={isa}" in kernel_choice.last_report()
    assert not choices_file.exists()


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_one_token_forward_takes_the_fused_decode_path(checkpoint, monkeypatch, quantize):
    """`forward(ids [B, 1], state)` without autograd runs `cpu_decode` on a copy of the state: the same logits
    and state as the general path (autograd on), and the caller's state is untouched."""
    model = RWKV7.from_pretrained(checkpoint, quantize=quantize)
    ids = torch.tensor([[3, 8, 1], [4, 4, 6]])
    _, state = model.forward_hidden(ids)
    before = state.clone()
    calls = []
    real = cpu_decode.decode_step
    monkeypatch.setattr(cpu_decode, "decode_step", lambda *a: calls.append(1) or real(*a))
    token = torch.tensor([[11], [2]])
    with torch.no_grad():
        fused, fused_state = model(token, state)
    assert calls == [1]
    assert all(torch.equal(a, b) for a, b in zip(state.tensors(), before.tensors()))
    general, general_state = model(token, state)  # grad enabled: the general path
    assert calls == [1]
    assert fused.shape == general.shape == (2, 1, SMALL.vocab_size)
    torch.testing.assert_close(fused, general.detach(), atol=1e-4, rtol=1e-4)
    for a, b in zip(fused_state.tensors(), general_state.tensors()):
        torch.testing.assert_close(a, b.detach(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_the_engine_decodes_and_scores_through_the_head_gemv(monkeypatch, quantize):
    """The 65536 x C head is the largest matrix of a small model's decode step: the engine's decode batch
    and its scoring (a few rows) run it through the chosen GEMV, compressed in the quantized formats."""
    from rwkv7_provider import RWKV7LLM

    engine = RWKV7LLM(model="default", quantize=quantize).client.engine
    head = engine.model.head
    # chosen when the engine was created, before any request
    assert engine.model.cpu_decode_kernel is not None
    assert isinstance(head, PackedLinear if quantize else GemvLinear) and head.kernel is not None
    seen = []
    real = cpu_kernels.gemv
    monkeypatch.setattr(cpu_kernels, "gemv", lambda x, w, *a: seen.append((w is head.weight, x.shape[0])) or real(x, w, *a))
    engine.score("Is this fine? Answer:", ["Yes", "No"])
    assert (True, 1) in seen  # one scoring position, one head GEMV
    seen.clear()
    engine.generate("Hello", max_tokens=4, temperature=0.0)
    assert seen.count((True, 1)) >= 3  # each decoded token's logits


def test_kernel_names_round_trip_through_the_cache_file():
    kernels = kernel_choice._gemv_candidates(cpu_kernels.F32) + kernel_choice._gemv_candidates(cpu_kernels.INT8)
    assert {k.a16 for k in kernels} == {False, True}  # int16 activations: a candidate for int8 weights only
    assert not any(k.a16 for k in kernel_choice._gemv_candidates(cpu_kernels.Q4))
    kernels += [replace(k, prefetch=pf, serial=serial) for k in kernels if k.isa not in (TORCH, "portable")
                for pf in (0, *kernel_choice.PREFETCH) for serial in (False, True)]
    assert all(kernel_choice._parse(str(k)) == k for k in kernels)
    assert kernel_choice._parse("avx2/3") is None and kernel_choice._parse("avx2/4+pfx") is None
    assert kernel_choice._parse("avx2/4+fast") is None


def test_without_simd_kernels_float32_runs_on_plain_torch(monkeypatch):
    """A CPU with only the portable C++ kernels (ARM, ...): float32 GEMVs and decode use plain torch unless
    measured otherwise; compressed weights still need the portable kernels."""
    monkeypatch.setattr(cpu_kernels, "status", lambda: cpu_kernels.Status(True, isas=("portable",)))
    monkeypatch.delenv("RWKV7_CPU_ISA", raising=False)
    assert cpu_kernels.default_kernel(cpu_kernels.F32) == Kernel(TORCH)
    assert cpu_kernels.default_kernel(cpu_kernels.INT8) == Kernel("portable")
    model = RWKV7(SMALL)
    assert cpu_decode.decode_kernel(model) == Kernel(TORCH)
    assert not cpu_decode.supported(model, model.zero_state(1))


def test_build_kernels_command_builds_and_measures(capsys, choices_file):
    from rwkv7_provider.cli import main
    from rwkv7_provider.guard.evaluate import DEFAULT_GUARD

    assert main(["build-kernels"]) == 0
    assert str(cpu_kernels.status().path) in capsys.readouterr().out
    assert main(["build-kernels", "--checkpoint", str(DEFAULT_GUARD), "--quantize", "int8"]) == 0
    out = capsys.readouterr().out
    assert "GEMV int8" in out and "ms/token" in out and choices_file.exists()


@pytest.mark.skipif(not cpu_kernels.onednn_available(), reason="this torch has no oneDNN linear")
def test_many_row_products_take_the_measured_gemm_with_the_same_results(checkpoint, choices_file, monkeypatch):
    """Prefill's GEMM is measured per float32 group but the head (torch's `F.linear` against oneDNN's), cached
    with the GEMVs, and either gives the model's logits and state within float32 rounding."""
    model = RWKV7.from_pretrained(checkpoint)
    kernel_choice.prepare(model, measure_again=True)
    groups = kernel_choice.gemm_groups(model, kernel_choice.gemv_groups(model))
    assert len(groups) == 3 and all(model.head not in g.layers for g in groups)  # r/k/v/o and the two FFN shapes
    assert kernel_choice.last_report().count("GEMM ") == 3
    stored = next(iter(json.loads(choices_file.read_text()).values()))
    assert set(stored["gemm"]) == {g.name for g in groups}
    assert {m.gemm for g in groups for m in g.layers} <= {TORCH, cpu_kernels.ONEDNN}

    ids = torch.randint(1, SMALL.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    results, real = {}, cpu_kernels.gemm
    for backend in (TORCH, cpu_kernels.ONEDNN):
        for layer in (m for g in groups for m in g.layers):
            layer.gemm = backend
        seen = []
        monkeypatch.setattr(cpu_kernels, "gemm", lambda x, w, b, seen=seen: seen.append(b) or real(x, w, b))
        with torch.inference_mode():
            results[backend] = model(ids)
        assert seen == ([] if backend == TORCH else [backend] * 6 * SMALL.n_layer)
    (a, state_a), (b, state_b) = results.values()
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for x, y in zip(state_a.tensors(), state_b.tensors()):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


def test_a_cached_choice_without_a_gemm_is_measured_again(checkpoint, choices_file, monkeypatch):
    """A choices.json written before the GEMM or the prefill path was measured (or naming a backend this torch
    lacks) is not half-applied: the model is measured again."""
    model = RWKV7.from_pretrained(checkpoint)
    for missing in ("gemm", "prefill"):
        kernel_choice.prepare(model, measure_again=True)
        stored = json.loads(choices_file.read_text())
        for entry in stored.values():
            del entry[missing]
        choices_file.write_text(json.dumps(stored))
        kernel_choice.prepare(model)
        assert not kernel_choice.last_was_cached()
    monkeypatch.setattr(cpu_kernels, "onednn_available", lambda: False)
    stored = json.loads(choices_file.read_text())
    for entry in stored.values():
        entry["gemm"] = dict.fromkeys(entry["gemm"], cpu_kernels.ONEDNN)
    choices_file.write_text(json.dumps(stored))
    kernel_choice.prepare(model)
    assert not kernel_choice.last_was_cached()
    assert {m.gemm for m in model.modules() if isinstance(m, GemvLinear)} == {TORCH}
