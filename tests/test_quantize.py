"""Compressed weights: the packing, the compiled GEMV / dequantise / WKV kernels, and model parity vs float32."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from rwkv7_provider.model import RWKV7, CheckpointError, cpu_decode, cpu_kernels
from rwkv7_provider.model.cpu_kernels import Kernel
from rwkv7_provider.model.quantize import (
    FORMATS,
    GEMV_MAX_ROWS,
    GemvLinear,
    PackedLinear,
    dequantize_reference,
    pack,
)

from rwkv7_provider.errors import ParameterError
from rwkv7_provider.guard.evaluate import DEFAULT_GUARD
from rwkv7_provider.testing import SMALL, WIDER, random_state_dict, set_int16_activations

EMPTY = torch.empty(0, dtype=torch.bfloat16)


def test_kernels_build_where_a_compiler_exists():
    """`make test` on a fresh machine builds them; without a compiler everything falls back (tested below)."""
    if shutil.which("c++") or shutil.which("g++"):
        assert cpu_kernels.available()
        assert cpu_kernels.isa() in ("avx512", "avx2", "portable")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_packing_error_is_bounded_and_nothing_is_clipped(fmt):
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 0, 256)
    packed = pack(w, fmt)
    err = (dequantize_reference(*packed, fmt, 256) - w).abs()
    if fmt == "bf16":
        assert (err <= w.abs() * 2**-8).all()
        return
    group = {"int8": 64, "q4": 32}[fmt]
    half_step = packed[1].float().repeat_interleave(group, dim=1) / 2
    assert (err <= half_step * (1 + 1e-6) + 1e-12).all()
    assert err.max() > 0  # it really is lossy: the bound above is not vacuous


@pytest.mark.skipif(not cpu_kernels.available(), reason="no C++ compiler: the fallback is tested separately")
@pytest.mark.parametrize("fmt", ["f32", *sorted(FORMATS)])
@pytest.mark.parametrize("rows", [1, 3, 4, 6, GEMV_MAX_ROWS])
def test_gemv_and_dequantize_match_plain_torch(fmt, rows):
    g = torch.Generator().manual_seed(rows)
    N, K = 135, 320  # N not a multiple of the 4 or 2 row streams (remainder rows), K not a power of two
    w = torch.randn(N, K, generator=g)
    x = torch.randn(rows, K, generator=g)
    if fmt == "f32":
        packed, code, dense = (w, EMPTY, EMPTY), cpu_kernels.F32, w
    else:
        packed, code = pack(w, fmt), FORMATS[fmt]
        dense = dequantize_reference(*packed, fmt, K)
        assert torch.equal(cpu_kernels.dequantize(*packed, code, K), dense)
        # straight to bf16, rounded exactly like torch's conversion
        assert torch.equal(cpu_kernels.dequantize(*packed, code, K, torch.bfloat16), dense.bfloat16())
    torch.testing.assert_close(cpu_kernels.gemv(x, *packed, code), x @ dense.T, atol=1e-4, rtol=1e-5)


@pytest.mark.skipif(not cpu_kernels.available(), reason="no C++ compiler")
@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefill_linear_by_blocks_matches_the_dense_gemm(fmt, dtype):
    """Prefill dequantises a block of rows at a time: every block size (ragged last block, one block, a block
    larger than the matrix) gives the GEMM with the whole dense weight."""
    g = torch.Generator().manual_seed(1)
    N, K, M = 135, 320, 40
    packed = pack(torch.randn(N, K, generator=g), fmt)
    dense = dequantize_reference(*packed, fmt, K).to(dtype)
    x = torch.randn(M, K, generator=g).to(dtype)
    want = F.linear(x.float(), dense.float())
    for block in (7, 64, N, 2 * N):
        got = cpu_kernels.linear(x, *packed, FORMATS[fmt], block)
        assert got.dtype == dtype and got.shape == (M, N)
        tol = {"atol": 1e-4, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 0.1, "rtol": 1e-2}
        torch.testing.assert_close(got.float(), want, **tol)


@pytest.mark.skipif(not cpu_kernels.available(), reason="no C++ compiler")
def test_float32_cpu_model_takes_the_gemv_for_few_rows(checkpoint, monkeypatch):
    """A float32 CPU load makes the big matrices `GemvLinear`: the GEMV for a few rows (the head of a decode
    step), torch's GEMM for many rows and wherever autograd needs a graph (training)."""
    path, config = checkpoint
    model = RWKV7.from_pretrained(path)
    assert type(model.head) is GemvLinear and type(model.blocks[0].att.key) is GemvLinear
    assert cpu_decode.supported(model, model.zero_state(1))
    assert type(model.blocks[0].att.w1) is torch.nn.Parameter  # LoRAs and vectors stay plain parameters
    calls = []
    real = cpu_kernels.gemv
    monkeypatch.setattr(cpu_kernels, "gemv", lambda *a: calls.append(a[0].shape) or real(*a))
    x = torch.randn(3, config.n_embd, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        few, many = model.head(x), model.head(x.repeat(GEMV_MAX_ROWS, 1))
    assert calls == [(3, config.n_embd)]
    torch.testing.assert_close(few, F.linear(x, model.head.weight), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(many[:3], few, atol=1e-4, rtol=1e-5)
    model.head.weight.requires_grad_(True)
    model.head(x).sum().backward()
    assert len(calls) == 1 and model.head.weight.grad is not None
    torch.testing.assert_close(model.head.weight.grad, x.sum(0).expand(config.vocab_size, -1))


@pytest.fixture(scope="module", params=[SMALL, WIDER], ids=["small", "wider"])
def checkpoint(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "model.pth"
    torch.save(random_state_dict(request.param, seed=5), path)
    return path, request.param


def _decode_logits(model: RWKV7, ids: list[int]) -> torch.Tensor:
    state = model.zero_state(1)
    with torch.inference_mode():
        return torch.cat([model.head(model.decode_step(torch.tensor([t]), state)).float() for t in ids])


def _ids(config, n=24):
    return torch.randint(1, config.vocab_size, (n,), generator=torch.Generator().manual_seed(1)).tolist()


# Relative logit error bound per format on random models (measured: bf16 0.4%, int8 1.4%, q4 15-21%); a wrong
# scale, nibble order or group offset gives errors of order 1.
REL_ERROR = {"bf16": 0.02, "int8": 0.04, "q4": 0.3}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_packed_model_matches_float32(checkpoint, fmt):
    path, config = checkpoint
    ref = RWKV7.from_pretrained(path)
    model = RWKV7.from_pretrained(path, quantize=fmt, compute_dtype=torch.float32)
    if cpu_kernels.available():
        set_int16_activations(model, False)  # float products on both paths below (int16 activations: tested further down)
    assert isinstance(model.blocks[0].ffn.key, PackedLinear) and isinstance(model.head, PackedLinear)
    ids = _ids(config)
    want = _decode_logits(ref, ids)
    got = _decode_logits(model, ids)
    assert (got - want).norm() / want.norm() < REL_ERROR[fmt]
    # the two paths of one packed model (GEMV vs dequantise + GEMM in float32) agree to float32 rounding
    with torch.inference_mode():
        prefill, _ = model(torch.tensor([ids]))
    torch.testing.assert_close(prefill[0], got, atol=2e-4, rtol=1e-4)


def test_bf16_prefill_gemms_stay_close(checkpoint):
    path, config = checkpoint
    ref, model = RWKV7.from_pretrained(path), RWKV7.from_pretrained(path, quantize="int8", compute_dtype="bf16")
    ids = torch.tensor([_ids(config, 40)])
    with torch.inference_mode():
        want, got = ref(ids)[0], model(ids)[0]
    assert model.head.compute_dtype == torch.bfloat16
    assert (got - want).norm() / want.norm() < 0.05


def test_fallback_without_kernels_gives_the_same_results(checkpoint, monkeypatch):
    path, config = checkpoint
    model = RWKV7.from_pretrained(path, quantize="int8", compute_dtype=torch.float32)
    ids = _ids(config, 8)
    fast = _decode_logits(model, ids)
    monkeypatch.setattr(cpu_kernels, "available", lambda: False)
    assert not cpu_decode.supported(model, model.zero_state(1))
    torch.testing.assert_close(_decode_logits(model, ids), fast, atol=2e-4, rtol=1e-4)


def test_trained_guard_next_token_accuracy():
    """A real trained RWKV-7 (the embedded guard) on its own kind of text: the issue's accuracy bounds."""
    from tokenizers import Tokenizer

    from rwkv7_provider.guard.prompts import SELF_CHECK_INPUT

    tok = Tokenizer.from_file(str(DEFAULT_GUARD / "tokenizer.json"))
    text = SELF_CHECK_INPUT.replace("{{ user_input }}", "How do I bake bread at home without yeast?")
    ids = tok.encode(text * 2).ids[:300]
    ref = _decode_logits(RWKV7.from_pretrained(DEFAULT_GUARD), ids)
    for fmt in ("bf16", "int8"):
        got = _decode_logits(RWKV7.from_pretrained(DEFAULT_GUARD, quantize=fmt), ids)
        kl = F.kl_div(got.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="none").sum(-1)
        assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.98, fmt
        assert kl.mean() <= 0.02, fmt


def test_format_errors(checkpoint, tmp_path):
    path, _ = checkpoint
    with pytest.raises(ParameterError, match="unknown quantize format 'int3'"):
        RWKV7.from_pretrained(path, quantize="int3")
    with pytest.raises(ParameterError, match="CPU decode format"):
        RWKV7.from_pretrained(path, device="cuda", quantize="int8")
    with pytest.raises(ParameterError, match="compute_dtype"):
        RWKV7.from_pretrained(path, quantize="int8", compute_dtype="float16")
    with pytest.raises(CheckpointError, match="compressed weights"):
        RWKV7.from_pretrained(path, quantize="q4").save_pretrained(tmp_path / "out")


@pytest.mark.skipif(not cpu_kernels.available(), reason="no C++ compiler")
@pytest.mark.parametrize("isa", sorted(cpu_kernels.ISA_CODES))
def test_every_instruction_set_and_stream_count_computes_the_same(isa):
    """Each instruction set's GEMV (every row-stream count, with prefetch, in one thread; one and several rows)
    and dequantisation against plain torch, all on this machine: the kernel is an argument of every call."""
    if isa not in cpu_kernels.status().isas:
        pytest.skip(f"this CPU does not run {isa}")
    g = torch.Generator().manual_seed(0)
    N, K = 37, 192  # N leaves remainder rows for every stream count
    w, x = torch.randn(N, K, generator=g), torch.randn(13, K, generator=g)
    for fmt, code in {"f32": cpu_kernels.F32, **FORMATS}.items():
        packed = (w, EMPTY, EMPTY) if fmt == "f32" else pack(w, fmt)
        dense = w if fmt == "f32" else dequantize_reference(*packed, fmt, K)
        if fmt != "f32":
            assert torch.equal(cpu_kernels.dequantize(*packed, code, K, isa_name=isa), dense), fmt
            assert torch.equal(cpu_kernels.dequantize(*packed, code, K, torch.bfloat16, isa), dense.bfloat16()), fmt
        for kernel in [cpu_kernels.Kernel(isa, s) for s in cpu_kernels.STREAMS] + [
            cpu_kernels.Kernel(isa, 4, prefetch=256), cpu_kernels.Kernel(isa, 2, serial=True)
        ]:
            for m in range(1, 14):  # every row count of a register tile (up to 6) and its remainders
                got = cpu_kernels.gemv(x[:m], *packed, code, kernel)
                torch.testing.assert_close(got, x[:m] @ dense.T, atol=1e-4, rtol=1e-5, msg=f"{fmt} {kernel} {m}")


def a16_reference(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """INT8_A16 by its definition (csrc/kernels.h): each 64 activations rounded to int16 against their largest,
    the integer dot products summed exactly (float64 holds them), scaled by the weights' and the activations'
    scales."""
    (M, K), N = x.shape, codes.shape[0]
    xg = x.view(M, K // 64, 64)
    t = xg.abs().amax(-1) / 32767
    q = torch.round(xg * torch.where(t > 0, 1 / t, 0)[..., None])  # half to even, like std::nearbyint
    dots = torch.einsum("mgj,ngj->mng", q.double(), codes.double().view(N, K // 64, 64))
    return (dots * scales.double().view(N, -1) * t.double()[:, None, :]).sum(-1).float()


@pytest.mark.skipif(not cpu_kernels.available(), reason="no C++ compiler")
@pytest.mark.parametrize("isa", sorted(cpu_kernels.ISA_CODES))
def test_int16_activations_give_the_rounded_product_whatever_the_rows_beside(isa):
    """`Kernel.a16` against its definition; every stream count, prefetch and row count gives each row the same
    bits as that row alone (batched decoding equals one row at a time); it moves the result by far less than
    int8 itself does; an inf in the activations takes the float product, which carries it."""
    if isa not in cpu_kernels.status().isas:
        pytest.skip(f"this CPU does not run {isa}")
    g = torch.Generator().manual_seed(0)
    N, K = 37, 192  # N leaves remainder rows for every stream count
    w = torch.randn(N, K, generator=g)
    x = torch.randn(13, K, generator=g) * torch.logspace(-2, 1, K)  # groups of very different scales
    packed, int8 = pack(w, "int8"), cpu_kernels.INT8
    alone = torch.cat([cpu_kernels.gemv(x[m : m + 1], *packed, int8, Kernel(isa, a16=True)) for m in range(13)])
    torch.testing.assert_close(alone, a16_reference(x, *packed[:2]), atol=1e-5, rtol=1e-5)
    for kernel in [Kernel(isa, s, a16=True) for s in cpu_kernels.STREAMS] + [
        Kernel(isa, 4, prefetch=256, a16=True), Kernel(isa, 2, serial=True, a16=True)
    ]:
        for m in range(1, 14):
            assert torch.equal(cpu_kernels.gemv(x[:m], *packed, int8, kernel), alone[:m]), f"{kernel} {m}"
    floats = cpu_kernels.gemv(x, *packed, int8, Kernel(isa))
    exact = x @ w.T
    assert 0 < (alone - floats).abs().max() < 0.01 * (floats - exact).abs().max()
    x[0, 5] = float("inf")
    torch.testing.assert_close(cpu_kernels.gemv(x[:1], *packed, int8, Kernel(isa, a16=True)),
                               cpu_kernels.gemv(x[:1], *packed, int8, Kernel(isa)), atol=0, rtol=0, equal_nan=True)
    with pytest.raises(ParameterError, match="int8 weights only"):
        cpu_kernels.gemv(x, w, EMPTY, EMPTY, cpu_kernels.F32, Kernel(isa, a16=True))


@pytest.mark.skipif(not cpu_kernels.available(), reason="no C++ compiler")
def test_a_model_decoding_with_int16_activations_stays_at_int8_accuracy(checkpoint):
    """Every GEMV of an int8 model (the fused decode step and the head) with and without `a16`: the logits move
    by a small share of what int8 itself moves them from float32."""
    path, config = checkpoint
    ids = _ids(config)
    want = _decode_logits(RWKV7.from_pretrained(path), ids)
    model = RWKV7.from_pretrained(path, quantize="int8", compute_dtype=torch.float32)

    def logits(a16: bool) -> torch.Tensor:
        set_int16_activations(model, a16)
        return _decode_logits(model, ids)

    floats, ints = logits(False), logits(True)
    assert 0 < (ints - floats).norm() < 0.05 * (floats - want).norm()


def test_quantize_reaches_the_engine_through_provider_and_langchain():
    """The parameter selects a compressed engine (its own registry entry) whose answers match fp32's."""
    import asyncio

    from rwkv7_provider.model.quantize import PackedLinear

    from rwkv7_provider import RWKV7LLM, ChatRWKV7
    from rwkv7_provider.guardrails import RWKV7Model

    prompt = "Is this message fine?"
    provider = RWKV7Model("default", quantize="int8", choices=["Yes", "No"])
    llm = RWKV7LLM(model="default", quantize="int8", choices=["Yes", "No"])
    assert llm.client.engine is provider.client.engine is ChatRWKV7(model="default", quantize="int8").client.engine
    engine = llm.client.engine
    assert isinstance(engine.model.blocks[0].att.key, PackedLinear)
    plain = RWKV7LLM(model="default", choices=["Yes", "No"]).client.engine
    assert plain is not engine and not isinstance(plain.model.blocks[0].att.key, PackedLinear)
    packed_p = asyncio.run(provider.generate_async(prompt)).provider_metadata["probability"]
    plain_p = plain.score(prompt, ["Yes", "No"]).probability
    assert abs(packed_p - plain_p) < 0.02


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_compressed_models_keep_the_loras_in_bf16_exactly(tmp_path, fmt):
    """A bf16 checkpoint's LoRA matrices stay bit for bit (half the bytes of float32 for decode to read); the
    uncompressed model keeps float32."""
    sd = {k: v.to(torch.bfloat16) for k, v in random_state_dict(SMALL, seed=4).items()}
    torch.save(sd, tmp_path / "m.pth")
    packed = RWKV7.from_pretrained(tmp_path / "m.pth", quantize=fmt)
    plain = RWKV7.from_pretrained(tmp_path / "m.pth")
    for name in ("w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2"):
        key = f"blocks.1.att.{name}"
        kept = packed.get_parameter(key)
        assert kept.dtype == torch.bfloat16 and torch.equal(kept, sd[key])
        assert plain.get_parameter(key).dtype == torch.float32
    assert packed.get_parameter("blocks.1.att.w0").dtype == torch.float32
