"""Batched model calls equal per-row calls: right-padded prefill with `lengths`, and the in-place decode step."""

from __future__ import annotations

import pytest
import torch
from rwkv7_provider.model import RWKV7

from rwkv7_provider.errors import InputError

from rwkv7_provider.testing import SMALL, random_state_dict


@pytest.fixture(scope="module")
def model() -> RWKV7:
    with torch.device("meta"):
        m = RWKV7(SMALL)
    m.load_state_dict(random_state_dict(SMALL, seed=3), assign=True)
    return m.eval().requires_grad_(False)


def _ids(n: int, seed: int) -> list[int]:
    return torch.randint(1, SMALL.vocab_size, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("impl", ["chunk", "reference"])
def test_right_padding_leaves_each_row_exact(model, impl, monkeypatch) -> None:
    monkeypatch.setenv("RWKV7_WKV_IMPL", impl)
    rows = [_ids(n, seed) for seed, n in enumerate((7, 40, 1, 33))]
    _, start = model.forward_hidden(torch.tensor([_ids(5, 9 + b) for b in range(len(rows))]))  # a state per row
    T = max(map(len, rows))
    padded = torch.tensor([r + [0] * (T - len(r)) for r in rows])
    hidden, state = model.forward_hidden(padded, start, lengths=torch.tensor([len(r) for r in rows]))
    for b, r in enumerate(rows):
        want_hidden, want = model.forward_hidden(torch.tensor([r]), start.select(b))
        torch.testing.assert_close(hidden[b, : len(r)], want_hidden[0], atol=1e-5, rtol=1e-5)
        assert not hidden[b, len(r) :].any()  # the padding holds zeros
        for got_t, want_t in zip(state.select(b).tensors(), want.tensors()):
            torch.testing.assert_close(got_t, want_t, atol=1e-5, rtol=1e-5)


def test_padding_costs_no_gemm_work(model) -> None:
    """Padded rows run packed: the projections see only the real tokens."""
    seen = []
    hook = model.blocks[1].att.receptance.register_forward_hook(lambda m, args, out: seen.append(args[0].numel()))
    try:
        model.forward_hidden(torch.tensor([_ids(30, 0), _ids(30, 1)]), lengths=torch.tensor([30, 3]))
    finally:
        hook.remove()
    assert seen == [33 * SMALL.n_embd]


def test_padded_rows_train_like_single_rows() -> None:
    """Gradients through the packed path equal those of the rows run one by one."""
    torch.manual_seed(0)
    with torch.device("meta"):
        m = RWKV7(SMALL)
    m.load_state_dict(random_state_dict(SMALL, seed=4), assign=True)
    rows = [_ids(9, 0), _ids(4, 1)]
    padded = torch.tensor([rows[0], rows[1] + [0] * 5])
    hidden, _ = m.forward_hidden(padded, lengths=torch.tensor([9, 4]))
    (hidden[0, :9].sum() + hidden[1, :4].sum()).backward()
    packed = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    m.zero_grad(set_to_none=True)
    sum(m.forward_hidden(torch.tensor([r]))[0].sum() for r in rows).backward()
    single = {n: p.grad for n, p in m.named_parameters() if p.grad is not None}
    assert packed.keys() == single.keys() and "blocks.1.att.w1" in packed
    for n, grad in single.items():
        torch.testing.assert_close(packed[n], grad, atol=1e-4, rtol=1e-4, msg=n)


def test_lengths_are_checked(model) -> None:
    ids = torch.tensor([_ids(4, 0), _ids(4, 1)])
    with pytest.raises(InputError, match="lengths must lie in"):
        model.forward_hidden(ids, lengths=torch.tensor([0, 4]))
    with pytest.raises(InputError, match="lengths must be an integer tensor"):
        model.forward_hidden(ids, lengths=torch.tensor([4]))


def test_decode_step_updates_state_in_place(model) -> None:
    prompt = torch.tensor([_ids(12, 4), _ids(12, 5)])
    _, state = model.forward_hidden(prompt)
    buffers = state.clone()
    next_ids = torch.tensor([17, 250])
    want_hidden, want = model.forward_hidden(next_ids.view(2, 1), state)
    got = model.decode_step(next_ids, buffers)
    torch.testing.assert_close(got, want_hidden[:, 0], atol=1e-6, rtol=1e-6)
    for got_t, want_t in zip(buffers.tensors(), want.tensors()):
        torch.testing.assert_close(got_t, want_t, atol=1e-6, rtol=1e-6)


def test_rows_are_the_batch_rows_in_storage_of_their_own(model) -> None:
    """What the scheduler hands each request after a batched forward (and the prefix cache may keep)."""
    state = model.zero_state(3)
    for t in state.tensors():
        t.copy_(torch.randn_like(t))
    rows = state.rows()
    assert len(rows) == 3
    for b, row in enumerate(rows):
        for got, want in zip(row.tensors(), state.select(b).tensors()):
            assert got.shape == want.shape and torch.equal(got, want)
            assert got.untyped_storage().nbytes() == got.numel() * got.element_size()  # not a view of the batch
