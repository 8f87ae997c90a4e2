"""The C++ token loop (`kernels.wkv7`'s "cpu" implementation, model/csrc) against the sequential reference.

Both sides run the same recurrence in fp32 token by token; they differ only in summation order inside each
dot product (SIMD lanes vs torch's matmul), so 1e-5 of the output scale is a >10x margin.
"""

from __future__ import annotations

import pytest
import torch
from rwkv7_provider.errors import ParameterError
from rwkv7_provider.kernels import pick_impl, wkv7
from rwkv7_provider.kernels.reference import wkv7_reference
from rwkv7_provider.kernels.testing import wkv7_inputs
from rwkv7_provider.model import cpu_kernels

pytestmark = pytest.mark.skipif(not cpu_kernels.available(), reason="needs a C++ compiler for the CPU kernels")


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.float() - ref.float()).abs().max() / ref.float().abs().max()).item()


@pytest.mark.parametrize("isa", cpu_kernels.status().isas or ["portable"])
# 64: the unrolled kernel; 40, 16, 18: the general one, with column tails (40, 18) and leftover rows (18)
@pytest.mark.parametrize("B, T, H, N", [(1, 1, 1, 64), (2, 37, 3, 64), (3, 9, 2, 40), (1, 130, 2, 16), (2, 11, 2, 18)])
@pytest.mark.parametrize("serial", [False, True])
def test_token_loop_matches_reference(isa: str, B: int, T: int, H: int, N: int, serial: bool) -> None:
    xs, state = wkv7_inputs(B, T, H, N, seed=T + N)
    before = state.clone()
    y_ref, s_ref = wkv7_reference(*xs, state)
    y, s = cpu_kernels.wkv7(*xs, state, isa_name=isa, serial=serial)
    assert torch.equal(state, before), "the input state was modified"
    assert y.shape == y_ref.shape and s.shape == (B, H, N, N) and s.dtype == torch.float32
    assert rel_err(y, y_ref) < 1e-5 and rel_err(s, s_ref) < 1e-5


def test_zero_state_and_half_precision_inputs() -> None:
    xs, _ = wkv7_inputs(2, 20, 2, 64, dtype=torch.bfloat16, with_state=False)
    y_ref, s_ref = wkv7_reference(*xs)
    with torch.inference_mode():
        y, s = wkv7(*xs, impl="cpu")
    assert y.dtype == torch.bfloat16 and rel_err(y, y_ref) < 1e-2 and rel_err(s, s_ref) < 1e-5


def test_chosen_for_cpu_inference_only() -> None:
    xs, state = wkv7_inputs(1, 8, 2, 64)
    r = xs[0]
    assert pick_impl(r) == "cpu"  # no autograd needed
    assert pick_impl(r, grad=True) == "chunk"  # training keeps the differentiable chunked form
    assert pick_impl(r[:, :1], grad=True) == "reference"
    leaf = xs[1].clone().requires_grad_()
    y, _ = wkv7(r, leaf, *xs[2:], state)
    assert y.grad_fn is not None  # autograd saw it: not the C++ loop
    with torch.no_grad():
        y, _ = wkv7(r, leaf, *xs[2:], state)
    assert y.grad_fn is None


def test_forcing_it_without_the_kernels_names_the_problem(monkeypatch) -> None:
    import rwkv7_provider.kernels as kernels

    monkeypatch.setattr(kernels, "_cpu", lambda: None)
    xs, _ = wkv7_inputs(1, 4, 1, 64)
    assert pick_impl(xs[0]) == "chunk"
    with pytest.raises(ParameterError, match="needs the compiled CPU kernels"):
        wkv7(*xs, impl="cpu")


@pytest.mark.parametrize("impl", ["cpu", "chunk", "reference"])
def test_packed_rows_match_each_row_alone(impl: str) -> None:
    """Rows of different lengths packed back to back (`cu_seqlens`): every row's outputs and final state are those
    of the row run alone, whether the implementation reads them packed (cpu) or on a padded copy."""
    lengths = [5, 1, 12, 7]
    rows = [wkv7_inputs(1, n, 2, 64, seed=n) for n in lengths]
    packed = [torch.cat([xs[i] for xs, _ in rows], 1) for i in range(6)]
    state = torch.cat([s for _, s in rows])
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    with torch.no_grad():
        y, s = wkv7(*packed, state, cu_seqlens=cu_seqlens, impl=impl)
    assert y.shape == packed[0].shape and s.shape == state.shape
    for i, ((xs, s0), start) in enumerate(zip(rows, cu_seqlens[:-1].tolist())):
        y_ref, s_ref = wkv7_reference(*xs, s0)
        assert rel_err(y[:, start : start + lengths[i]], y_ref) < 1e-5 and rel_err(s[i : i + 1], s_ref) < 1e-5
