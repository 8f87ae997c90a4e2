"""The chunkwise-parallel WKV-7 (`kernels/chunk.py`) against the sequential reference.

Tolerances: both sides compute in fp32 but sum in different orders (triangular-inverse and chunk products vs. a
token loop), so they differ by accumulated rounding, measured at <= 7e-7 of the output scale. We compare
max|diff| / max|ref| (relative to the tensor's scale, so near-zero entries do not blow up the measure):
1e-5 for outputs and states leaves a >10x margin while any algebra mistake shows up at 1e-3 or more;
gradients run through a longer chain (backward of the tree products and of the chunk-to-chunk pass): 1e-4.
"""

from __future__ import annotations

import pytest
import torch
from rwkv7_provider.kernels import chunk, wkv7
from rwkv7_provider.kernels.chunk import unit_lower_inverse, wkv7_chunk
from rwkv7_provider.kernels.reference import wkv7_reference
from rwkv7_provider.kernels.testing import wkv7_inputs


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors here are small: one intra-op thread is as fast, and immune to a busy machine descheduling
    one of two threads (which stalls every parallel region)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["flat", "tree"])
def form(request, monkeypatch):
    """Run a test under each form of the interaction matrices: RWKV-7's decays take the flat form by themselves;
    a negative bound sends every input to the tree form."""
    if request.param == "tree":
        monkeypatch.setattr(chunk, "MAX_FLAT_DECAY", -1.0)
    return request.param


def make_inputs(B: int, T: int, H: int, N: int, seed: int = 0) -> list[torch.Tensor]:
    return wkv7_inputs(B, T, H, N, seed=seed, with_state=False)[0]


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """max|x - ref| / max|ref|."""
    return ((x - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("N", [64, 16])
@pytest.mark.parametrize("T", [1, 15, 64, 200])
@pytest.mark.parametrize("with_state", [False, True])
def test_forward_matches_reference(N: int, T: int, with_state: bool, form: str) -> None:
    B, H = 2, 2
    xs = make_inputs(B, T, H, N, seed=T + N)
    state = torch.randn(B, H, N, N, generator=torch.Generator().manual_seed(1)) * 0.5 if with_state else None
    y_ref, s_ref = wkv7_reference(*xs, state)
    for chunk_size in (16, 32, 64):
        y, s = wkv7_chunk(*xs, state, chunk_size=chunk_size)
        assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
        assert s.shape == (B, H, N, N) and s.dtype == torch.float32
        assert rel_err(y, y_ref) < 1e-5, (chunk_size, rel_err(y, y_ref))
        assert rel_err(s, s_ref) < 1e-5, (chunk_size, rel_err(s, s_ref))


def test_chunk_size_not_power_of_two(form: str) -> None:
    xs = make_inputs(1, 50, 2, 16, seed=3)
    y_ref, s_ref = wkv7_reference(*xs)
    for chunk_size in (17, 24, 48):
        y, s = wkv7_chunk(*xs, chunk_size=chunk_size)
        assert rel_err(y, y_ref) < 1e-5 and rel_err(s, s_ref) < 1e-5, chunk_size


def test_gradients_match_reference(form: str) -> None:
    B, T, H, N = 2, 37, 2, 32
    xs = make_inputs(B, T, H, N, seed=7)
    state = torch.randn(B, H, N, N, generator=torch.Generator().manual_seed(8)) * 0.5
    gen = torch.Generator().manual_seed(9)
    gy, gs = torch.randn(B, T, H, N, generator=gen), torch.randn(B, H, N, N, generator=gen)

    def grads(fn, **kw) -> list[torch.Tensor]:
        leaves = [x.clone().requires_grad_() for x in (*xs, state)]
        y, s = fn(*leaves, **kw)
        ((y * gy).sum() + (s * gs).sum()).backward()
        return [x.grad for x in leaves]

    ref = grads(wkv7_reference)
    for chunk_size in (16, 24, 32):  # 24: base blocks of 3 tokens with pairwise decays
        got = grads(wkv7_chunk, chunk_size=chunk_size)
        for name, g, g_ref in zip(("r", "w", "k", "v", "a", "b", "state"), got, ref):
            assert rel_err(g, g_ref) < 1e-4, (chunk_size, name, rel_err(g, g_ref))


def test_input_state_unchanged() -> None:
    xs = make_inputs(1, 40, 2, 16)
    state = torch.randn(1, 2, 16, 16)
    before = state.clone()
    _, s = wkv7_chunk(*xs, state)
    assert torch.equal(state, before)
    assert s.data_ptr() != state.data_ptr()


@pytest.mark.parametrize("scale", [60.0, 4.0])
def test_strong_decay_stays_finite(scale: float) -> None:
    """Log decays beyond RWKV-7's range take the tree form: no exp overflow, so no inf/nan in values or gradients.
    60: down to -36 per token, -2300 over a chunk; 4: just past the flat form's bound over a 32-token chunk."""
    r, w, k, v, a, b = make_inputs(1, 64, 1, 16)
    w = (w * scale).requires_grad_()
    assert (w.detach().view(2, 32, -1).sum(1) < -chunk.MAX_FLAT_DECAY).any()  # not the flat form
    y, s = wkv7_chunk(r, w, k, v, a, b)
    y_ref, s_ref = wkv7_reference(r, w, k, v, a, b)
    assert rel_err(y, y_ref) < 1e-5 and rel_err(s, s_ref) < 1e-5
    (y.sum() + s.sum()).backward()
    assert torch.isfinite(w.grad).all()


def test_flat_form_at_its_decay_bound() -> None:
    """A constant decay that puts every chunk just inside MAX_FLAT_DECAY: the flat form's largest factors
    (e^{-g} ~ e^{40}) still give exact values and finite gradients that match the reference."""
    r, w, k, v, a, b = make_inputs(1, 64, 2, 16, seed=5)
    w = torch.full_like(w, -0.99 * chunk.MAX_FLAT_DECAY / 32)
    leaves = [x.clone().requires_grad_() for x in (r, w, k, v, a, b)]
    ref_leaves = [x.clone().requires_grad_() for x in (r, w, k, v, a, b)]
    y, s = wkv7_chunk(*leaves)
    y_ref, s_ref = wkv7_reference(*ref_leaves)
    assert rel_err(y, y_ref) < 1e-5 and rel_err(s, s_ref) < 1e-5
    (y.sum() + s.sum()).backward()
    (y_ref.sum() + s_ref.sum()).backward()
    for x, x_ref in zip(leaves, ref_leaves):
        assert torch.isfinite(x.grad).all() and rel_err(x.grad, x_ref.grad) < 1e-4


@pytest.mark.parametrize("C", [1, 6, 32, 40])
def test_unit_lower_inverse(C: int) -> None:
    """(I - L)^{-1} by base-block solves and doubling, against a plain triangular solve."""
    L = torch.randn(3, C, C, generator=torch.Generator().manual_seed(C)).tril(-1) * 0.3
    eye = torch.eye(C).expand(3, C, C)
    want = torch.linalg.solve_triangular(eye - L, eye, upper=False)
    torch.testing.assert_close(unit_lower_inverse(L), want, atol=1e-5, rtol=1e-5)


def test_low_precision_inputs() -> None:
    xs = [x.to(torch.bfloat16) for x in make_inputs(1, 33, 2, 16)]
    y_ref, s_ref = wkv7_reference(*xs)
    y, s = wkv7_chunk(*xs)
    assert y.dtype == torch.bfloat16 and s.dtype == torch.float32
    assert rel_err(s, s_ref) < 1e-5
    assert rel_err(y.float(), y_ref.float()) < 1e-2  # bf16 rounding of the outputs


def test_dispatcher_chunk_equals_reference() -> None:
    xs = make_inputs(2, 45, 2, 16)
    state = torch.randn(2, 2, 16, 16) * 0.5
    y_ref, s_ref = wkv7(*xs, state, impl="reference")
    y, s = wkv7(*xs, state, impl="chunk")
    assert rel_err(y, y_ref) < 1e-5 and rel_err(s, s_ref) < 1e-5


def test_default_chunk_size_pads_short_batches_less() -> None:
    sizes = {T: chunk.default_chunk_size(T) for T in (1, 8, 20, 40, 52, 78, 128, 140, 1024)}
    assert sizes == {1: 16, 8: 16, 20: 32, 40: 16, 52: 32, 78: 16, 128: 32, 140: 32, 1024: 32}
    xs = make_inputs(3, 78, 2, 64, seed=5)
    y_ref, s_ref = wkv7_reference(*xs)
    y, s = wkv7_chunk(*xs)  # the default: 16 here
    assert rel_err(y, y_ref) < 1e-5 and rel_err(s, s_ref) < 1e-5
