"""The Triton WKV-7 kernels, interpreted on CPU tensors, against the float32 sequential reference.

Triton reads TRITON_INTERPRET when a kernel is decorated, its own helpers (tl.cdiv, tl.sum's combine
function) included, so the variable must be set before `triton` is first imported in the process: here,
above every import, and in tests/conftest.py for runs where another module imports triton first (importing
torch._dynamo does). If triton was nevertheless imported without it, the module is skipped with that reason.
The default set covers the issue's shapes (H = 2, N = 64, T = 1, 17, 64, 130, with and without an initial
state) in about a minute; `pytest -m slow` adds chunk size 32, fp16/bf16 everywhere and a long sequence.

Tolerances. fp32: kernel and reference both compute in float32, only the order of the sums differs (the
chunked form sums over a chunk with exp(+-L) factors up to exp(0.6065 * 16) ~ 1.6e4 that cancel exactly in
real arithmetic), so errors are a few float32 ulps of the largest terms: observed <= 1e-6 of max|ref|; we
allow 2e-5 of max|ref|. bf16: both sides get the same bf16 inputs and compute in fp32, but y and the
gradients are rounded to bf16 (relative step 2^-8), so we allow 1e-2 of max|ref|.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed; the Triton WKV kernels cannot run")
from triton.runtime.interpreter import InterpretedFunction

if not isinstance(triton.language.cdiv, InterpretedFunction):
    pytest.skip(
        "triton was imported before TRITON_INTERPRET=1 was set (set it at the top of tests/conftest.py)",
        allow_module_level=True,
    )

from rwkv7_provider.errors import InputError
from rwkv7_provider.kernels import triton_chunk, triton_ops, wkv7, wkv7_decode_, wkv7_reference
from rwkv7_provider.kernels.testing import wkv7_inputs

H, N = 2, 64
FP32_TOL = 2e-5
BF16_TOL = 1e-2


def make_inputs(B, T, *, dtype=torch.float32, with_state=True, seed=0, heads=H):
    return wkv7_inputs(B, T, heads, N, dtype=dtype, with_state=with_state, seed=seed)


def assert_close(actual, expected, tol, what=""):
    scale = max(1.0, expected.abs().max().item())
    err = (actual.float() - expected.float()).abs().max().item()
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} * {scale:.3g}"


def grads_of(fn, inputs, state, dy, dS):
    """Gradients of sum(y * dy) (+ sum(S * dS) when dS is given) for the six inputs and the state."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    s = state.detach().clone().requires_grad_() if state is not None else None
    y, new = fn(*leaves, s)
    loss = (y.float() * dy).sum()
    if dS is not None:
        loss = loss + (new * dS).sum()
    loss.backward()
    return [t.grad for t in leaves] + ([s.grad] if s is not None else [])


@pytest.mark.parametrize("T", [1, 17, 64, 130])
@pytest.mark.parametrize("with_state", [False, True])
def test_forward_matches_reference(T, with_state):
    """Through the dispatcher; without autograd, T = 1 takes the fused decode step (out of place)."""
    inputs, state = make_inputs(2, T, with_state=with_state, seed=T)
    before = state.clone() if with_state else None
    y, new = wkv7(*inputs, state, impl="triton")
    y_ref, new_ref = wkv7_reference(*inputs, state)
    assert y.dtype == torch.float32 and new.dtype == torch.float32 and new.shape == (2, H, N, N)
    assert_close(y, y_ref, FP32_TOL, "y")
    assert_close(new, new_ref, FP32_TOL, "state")
    if with_state:
        assert torch.equal(state, before), "the input state must not be modified"


@pytest.mark.parametrize("block_v", [16, 32])
def test_forward_value_blocks(block_v):
    """The forward splits the state's value rows over programs; every split gives the same result."""
    inputs, state = make_inputs(1, 40, seed=1)
    y, new, states = triton_chunk.chunk_fwd(*inputs, state, block_v=block_v, save_states=True)
    y_ref, new_ref = wkv7_reference(*inputs, state)
    assert_close(y, y_ref, FP32_TOL, "y")
    assert_close(new, new_ref, FP32_TOL, "state")
    _, mid = wkv7_reference(*(t[:, :32] for t in inputs), state)  # the checkpoint at the third chunk start
    assert states.shape == (1, H, 3, N, N)
    assert_close(states[:, :, 2], mid, FP32_TOL, "chunk-start state")


@pytest.mark.parametrize("T", [1, 17, 64, 130])
@pytest.mark.parametrize("with_state", [False, True])
def test_backward_matches_reference(T, with_state):
    """All seven gradients. With an initial state the loss also reads the final state (dS path); without,
    only y (the final-state gradient arrives as None)."""
    B = 2 if T <= 17 else 1  # the reference's autograd loop is the slow part here
    inputs, state = make_inputs(B, T, with_state=with_state, seed=100 + T)
    g = torch.Generator().manual_seed(T)
    dy = torch.randn(B, T, H, N, generator=g)
    dS = torch.randn(B, H, N, N, generator=g) if with_state else None
    got = grads_of(triton_ops.wkv7_triton, inputs, state, dy, dS)
    ref = grads_of(wkv7_reference, inputs, state, dy, dS)
    for name, x, x_ref in zip(["r", "w", "k", "v", "a", "b", "state"], got, ref):
        assert_close(x, x_ref, FP32_TOL, f"d{name}")


def test_split_prefill_equals_one_call():
    """Prefill in two calls with the state passed along equals one call: what the prefix cache relies on."""
    inputs, state = make_inputs(1, 50, seed=3)
    y, new = triton_ops.wkv7_triton(*inputs, state)
    y1, mid = triton_ops.wkv7_triton(*(t[:, :21] for t in inputs), state)
    y2, end = triton_ops.wkv7_triton(*(t[:, 21:] for t in inputs), mid)
    assert_close(torch.cat([y1, y2], 1), y, FP32_TOL, "y")
    assert_close(end, new, FP32_TOL, "state")


def test_bf16_inputs():
    """bf16 r, k, v (as a bf16 model passes them), fp32 w, a, b: y in bf16, each grad in its input's dtype."""
    inputs, state = make_inputs(1, 37, seed=4)
    for i in (0, 2, 3):
        inputs[i] = inputs[i].to(torch.bfloat16)
    y, new = triton_ops.wkv7_triton(*inputs, state)
    y_ref, new_ref = wkv7_reference(*inputs, state)
    assert y.dtype == torch.bfloat16 and new.dtype == torch.float32
    assert_close(y, y_ref, BF16_TOL, "y")
    assert_close(new, new_ref, FP32_TOL, "state")  # the state never passes through bf16
    g = torch.Generator().manual_seed(5)
    dy, dS = torch.randn(1, 37, H, N, generator=g), torch.randn(1, H, N, N, generator=g)
    got = grads_of(triton_ops.wkv7_triton, inputs, state, dy, dS)
    ref = grads_of(wkv7_reference, inputs, state, dy, dS)
    for name, x, x_ref, inp in zip(["r", "w", "k", "v", "a", "b", "state"], got, ref, [*inputs, state]):
        assert x.dtype == inp.dtype, f"d{name} dtype"
        assert_close(x, x_ref, BF16_TOL, f"d{name}")


@pytest.mark.parametrize("token_dim", [False, True])
def test_decode_step_in_place(token_dim):
    """One token for a batch: y and the state updated in place equal the reference; a clone stays intact."""
    B = 3
    inputs, state = make_inputs(B, 1, seed=6)
    y_ref, new_ref = wkv7_reference(*inputs, state)
    step = inputs if token_dim else [t[:, 0] for t in inputs]
    buffer = state.clone()
    y = triton_ops.wkv7_decode_(*step, buffer)
    assert y.shape == step[0].shape
    assert_close(y.reshape(y_ref.shape), y_ref, FP32_TOL, "y")
    assert_close(buffer, new_ref, FP32_TOL, "state")
    # The dispatcher's CPU path (reference step) has the same contract.
    buffer_cpu = state.clone()
    y_cpu = wkv7_decode_(*step, buffer_cpu)
    assert y_cpu.shape == step[0].shape
    assert_close(buffer_cpu, new_ref, FP32_TOL, "state (cpu path)")
    assert_close(y_cpu.reshape(y_ref.shape), y_ref, FP32_TOL, "y (cpu path)")


def test_decode_dispatch_override(monkeypatch):
    """RWKV7_WKV_IMPL=triton routes the decode dispatcher to the kernel even for CPU tensors."""
    monkeypatch.setenv("RWKV7_WKV_IMPL", "triton")
    inputs, state = make_inputs(2, 1, seed=7)
    buffer = state.clone()
    y = wkv7_decode_(*(t[:, 0] for t in inputs), buffer)
    y_ref, new_ref = wkv7_reference(*inputs, state)
    assert_close(y, y_ref[:, 0], FP32_TOL, "y")
    assert_close(buffer, new_ref, FP32_TOL, "state")


def test_decode_rejects_a_state_it_cannot_update_in_place():
    inputs, state = make_inputs(1, 1, seed=8)
    with pytest.raises(InputError, match="float32"):
        triton_ops.wkv7_decode_(*(t[:, 0] for t in inputs), state.transpose(-1, -2))


# ---- exhaustive set (pytest -m slow) -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("T", [2, 15, 16, 31, 32, 33, 100, 257])
@pytest.mark.parametrize("chunk", [16, 32])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_sizes_exhaustive(T, chunk, with_state):
    """Forward and backward launchers at every chunk size, three heads, value blocks of 16."""
    inputs, state = make_inputs(2, T, with_state=with_state, seed=T + chunk, heads=3)
    y, new, states = triton_chunk.chunk_fwd(*inputs, state, chunk=chunk, block_v=16, save_states=True)
    y_ref, new_ref = wkv7_reference(*inputs, state)
    assert_close(y, y_ref, FP32_TOL, "y")
    assert_close(new, new_ref, FP32_TOL, "state")
    g = torch.Generator().manual_seed(T)
    dy, dS = torch.randn(*y.shape, generator=g), torch.randn(*new.shape, generator=g)
    *got, dh0 = triton_chunk.chunk_bwd(*inputs, states, dy, dS, chunk=chunk)
    ref = grads_of(wkv7_reference, inputs, state, dy, dS)
    for name, x, x_ref in zip(["r", "w", "k", "v", "a", "b"], got, ref):
        assert_close(x, x_ref, FP32_TOL, f"d{name}")
    if with_state:
        assert_close(dh0, ref[-1], FP32_TOL, "dstate")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("T", [1, 64, 130])
def test_half_inputs_exhaustive(dtype, T):
    inputs, state = make_inputs(2, T, dtype=dtype, seed=T)
    y, new = triton_ops.wkv7_triton(*inputs, state)
    y_ref, new_ref = wkv7_reference(*inputs, state)
    assert y.dtype == dtype
    assert_close(y, y_ref, BF16_TOL, "y")
    assert_close(new, new_ref, FP32_TOL, "state")
    g = torch.Generator().manual_seed(T)
    dy, dS = torch.randn(2, T, H, N, generator=g), torch.randn(2, H, N, N, generator=g)
    got = grads_of(triton_ops.wkv7_triton, inputs, state, dy, dS)
    ref = grads_of(wkv7_reference, inputs, state, dy, dS)
    for name, x, x_ref in zip(["r", "w", "k", "v", "a", "b", "state"], got, ref):
        assert_close(x, x_ref, BF16_TOL, f"d{name}")


@pytest.mark.slow
def test_long_sequence_exhaustive():
    """Many chunks in a row (state carried through 32 chunk boundaries), forward and backward."""
    inputs, state = make_inputs(1, 520, seed=9)
    g = torch.Generator().manual_seed(9)
    dy, dS = torch.randn(1, 520, H, N, generator=g), torch.randn(1, H, N, N, generator=g)
    y, new = triton_ops.wkv7_triton(*inputs, state)
    y_ref, new_ref = wkv7_reference(*inputs, state)
    assert_close(y, y_ref, FP32_TOL, "y")
    assert_close(new, new_ref, FP32_TOL, "state")
    got = grads_of(triton_ops.wkv7_triton, inputs, state, dy, dS)
    ref = grads_of(wkv7_reference, inputs, state, dy, dS)
    for name, x, x_ref in zip(["r", "w", "k", "v", "a", "b", "state"], got, ref):
        assert_close(x, x_ref, FP32_TOL, f"d{name}")
