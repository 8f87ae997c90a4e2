"""The CPU prefill's fused ops (`model/cpu_prefill.py`) against the general path of `RWKV7.forward_hidden`, the
readable TimeMix / ChannelMix in plain torch; whole forwards against the `rwkv` package are in
test_model_oracle.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from rwkv7_provider.model import RWKV7, cpu_kernels, cpu_prefill
from rwkv7_provider.model.cpu_kernels import Kernel

from rwkv7_provider.testing import WIDER, random_state_dict, set_int16_activations

pytestmark = pytest.mark.skipif(not cpu_kernels.available(), reason="no C++ compiler")

LAYOUTS = {  # (batch, tokens, lengths): one sequence, equal rows, rows of different lengths (packed)
    "one": (1, 7, None),
    "rows": (3, 5, None),
    "ragged": (3, 6, [6, 2, 1]),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("prefill") / "m.pth"
    torch.save(random_state_dict(WIDER, seed=4, layer0_v=True), path)
    return path


def _forward(model, ids, state, lengths):
    with torch.inference_mode():
        return model.forward_hidden(ids, state, None if lengths is None else torch.tensor(lengths))


@pytest.mark.parametrize("fmt", [None, "int8"])  # int8: the LoRAs are bf16 and the Linears packed
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("isa", sorted(cpu_kernels.ISA_CODES))
def test_fused_forward_matches_the_general_path(checkpoint, monkeypatch, fmt, layout, isa):
    """Hidden states and the new state after a non-zero state, for every batch layout, weight format and
    instruction set; the fused ops run, and the input state is left as it was."""
    if isa not in cpu_kernels.status().isas:
        pytest.skip(f"this CPU does not run {isa}")
    model = RWKV7.from_pretrained(checkpoint, quantize=fmt)
    model.cpu_decode_kernel, model.cpu_prefill_fused = Kernel(isa), True  # whatever was measured faster here
    set_int16_activations(model, False)  # float products on both paths (int16 activations: test_quantize)
    batch, tokens, lengths = LAYOUTS[layout]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, WIDER.vocab_size, (batch, tokens), generator=g)
    _, state = _forward(model, torch.randint(0, WIDER.vocab_size, (batch, 4), generator=g), None, None)
    before = state.clone()
    calls = []
    real = cpu_kernels.time_mix_seq
    monkeypatch.setattr(cpu_kernels, "time_mix_seq", lambda *a: calls.append(1) or real(*a))
    fused, fused_state = _forward(model, ids, state, lengths)
    assert len(calls) == WIDER.n_layer
    for a, b in zip(state.tensors(), before.tensors()):
        assert torch.equal(a, b)
    monkeypatch.setattr(cpu_prefill, "supported", lambda *_: False)
    general, general_state = _forward(model, ids, state, lengths)
    assert len(calls) == WIDER.n_layer
    torch.testing.assert_close(fused, general, atol=2e-5, rtol=1e-4)
    for a, b in zip(fused_state.tensors(), general_state.tensors()):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_shift_mix_seq_shifts_inside_each_row():
    """LayerNorm, then each token against the one before it in its own row (the first against x_prev); an empty
    row keeps its x_prev."""
    g = torch.Generator().manual_seed(1)
    C, cu = 96, torch.tensor([0, 3, 3, 7])  # rows of 3, 0 and 4 tokens
    x, prev = torch.randn(7, C, generator=g) * 2 + 0.5, torch.randn(3, C, generator=g)
    w, b = torch.rand(C, generator=g) + 0.5, torch.randn(C, generator=g) * 0.1
    mixes = [torch.rand(1, 1, C, generator=g) for _ in range(2)]
    xn = F.layer_norm(x, (C,), w, b, 1e-5)
    before = torch.cat([prev[:1], xn[0:2], prev[2:], xn[3:6]])
    want = torch.stack([xn + (before - xn) * m.view(C) for m in mixes])
    got, last = cpu_kernels.shift_mix_seq(x, prev, w, b, 1e-5, mixes, cu)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last, torch.stack([xn[2], prev[1], xn[6]]), atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="cu_seqlens has 2 rows, x_prev 3"):
        cpu_kernels.shift_mix_seq(x, prev, w, b, 1e-5, mixes, torch.tensor([0, 3, 7]))


def test_training_takes_the_general_path(checkpoint, monkeypatch):
    """With autograd on, the readable layers run (the fused ops have no backward) and gradients reach the weights."""
    model = RWKV7.from_pretrained(checkpoint).requires_grad_(True)
    monkeypatch.setattr(cpu_kernels, "time_mix_seq", lambda *a: pytest.fail("fused op under autograd"))
    hidden, _ = model.forward_hidden(torch.randint(0, WIDER.vocab_size, (2, 5)))
    hidden.square().mean().backward()
    assert model.blocks[0].att.w1.grad is not None
