"""Our RWKV-7 against BlinkDL's own inference code (the `rwkv` PyPI package), on random checkpoints.

Tolerance: both sides compute in float32 with different operation orders (the oracle uses a token loop
and 0.606531 for exp(-0.5)); on these models logits are O(1-10) and agree to ~1e-5, so 1e-4 absolute
leaves margin without hiding a wrong equation (a wrong term moves logits by >1e-2).
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from rwkv7_provider.model import RWKV7, RWKV7State

from rwkv7_provider.testing import SMALL, WIDER, random_state_dict

os.environ["RWKV_V7_ON"] = "1"
os.environ["RWKV_CUDA_ON"] = "0"
oracle_model = pytest.importorskip("rwkv.model")

TOL = 1e-4


@pytest.fixture(scope="module", params=[("small", SMALL, True), ("wider", WIDER, False)], ids=lambda p: p[0])
def pair(request, tmp_path_factory):
    """(ours, oracle, config) loaded from the same random .pth."""
    name, config, layer0_v = request.param
    path = tmp_path_factory.mktemp(name) / "model.pth"
    torch.save(random_state_dict(config, seed=7, layer0_v=layer0_v), path)
    oracle = oracle_model.RWKV(model=str(path.with_suffix("")), strategy="cpu fp32")
    return RWKV7.from_pretrained(path), oracle, config


def tokens(config, n, seed):
    return torch.randint(0, config.vocab_size, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def assert_state_close(ours: RWKV7State, oracle_state: list[torch.Tensor], row: int = 0) -> None:
    for mine, theirs in zip(ours.to_rwkv_list(row), oracle_state):
        torch.testing.assert_close(mine.float(), theirs.float(), atol=TOL, rtol=0)


def test_full_sequence_logits_and_state(pair):
    model, oracle, config = pair
    ids = tokens(config, 37, seed=1)
    want, want_state = oracle.forward(ids, None, full_output=True)
    got, state = model(torch.tensor([ids]))
    assert got.shape == (1, 37, config.vocab_size) and got.dtype == torch.float32
    assert (got[0] - want).abs().max() <= TOL
    assert_state_close(state, want_state)


@pytest.mark.parametrize("grad", [True, False], ids=["general_path", "fused_path"])
def test_token_by_token_decoding(pair, grad):
    """`forward` one token at a time; without autograd it takes the fused CPU decode path."""
    model, oracle, config = pair
    ids = tokens(config, 12, seed=2)
    state, oracle_state = None, None
    with torch.set_grad_enabled(grad):
        for t in ids:
            want, oracle_state = oracle.forward([t], oracle_state)
            got, state = model(torch.tensor([[t]]), state)
            assert (got[0, -1] - want).abs().max() <= TOL
    assert_state_close(state, oracle_state)


def test_decode_steps_of_two_rows_match(pair):
    """`decode_step` (on CPU: the fused path of model/cpu_decode.py) with two rows decoded together, each
    against its own oracle run: every token's logits, then the state."""
    model, oracle, config = pair
    ids = torch.tensor([tokens(config, 16, seed=4), tokens(config, 16, seed=5)])
    state = model.zero_state(2)
    oracle_states = [None, None]
    with torch.inference_mode():
        for t in range(ids.shape[1]):
            logits = model.head(model.decode_step(ids[:, t], state))
            for row in range(2):
                want, oracle_states[row] = oracle.forward([int(ids[row, t])], oracle_states[row])
                assert (logits[row] - want).abs().max() <= TOL, (t, row)
    for row in range(2):
        assert_state_close(state, oracle_states[row], row)


def test_prefill_split_in_two_carries_state(pair):
    model, oracle, config = pair
    ids = tokens(config, 50, seed=3)
    want, _ = oracle.forward(ids, None)
    _, state = model(torch.tensor([ids[:29]]))
    before = state.clone()
    got, _ = model(torch.tensor([ids[29:]]), state, last_only=True)
    assert got.shape == (1, 1, config.vocab_size)
    assert (got[0, -1] - want).abs().max() <= TOL
    for a, b in zip(state.tensors(), before.tensors()):  # the input state was not modified
        assert torch.equal(a, b)


def test_batch_matches_separate_runs(pair):
    model, oracle, config = pair
    seqs = [tokens(config, 20, seed=4), tokens(config, 20, seed=5)]
    got, state = model(torch.tensor(seqs))
    for row, ids in enumerate(seqs):
        want, want_state = oracle.forward(copy.deepcopy(ids), None, full_output=True)
        assert (got[row] - want).abs().max() <= TOL
        assert_state_close(state, want_state, row)


def test_hf_layout_gives_same_logits(pair, tmp_path):
    model, _, config = pair
    model.save_pretrained(tmp_path / "hf")
    hf = RWKV7.from_pretrained(tmp_path / "hf")
    ids = torch.tensor([tokens(config, 25, seed=6)])
    assert torch.equal(model(ids)[0], hf(ids)[0])


def test_bf16_weights_agree(pair, tmp_path):
    model, oracle, config = pair
    ids = tokens(config, 30, seed=8)
    want, _ = oracle.forward(ids, None, full_output=True)
    path = tmp_path / "bf16.pth"
    torch.save({k: v.bfloat16() for k, v in model.state_dict().items()}, path)
    loaded = RWKV7.from_pretrained(path)  # computes in fp32 on CPU by default
    assert loaded.dtype == torch.float32
    half = RWKV7.from_pretrained(path, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    for m in (loaded, half):
        got = m(torch.tensor([ids]))[0][0]
        agree = (got.argmax(-1) == want.argmax(-1)).float().mean()
        assert agree >= 0.9
        assert (got - want).abs().max() <= 0.05 * want.abs().max()
