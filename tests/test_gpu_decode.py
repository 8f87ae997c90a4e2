"""The GPU decode step (`model/gpu_decode.py`, fused Triton kernels), interpreted on CPU tensors, against the
PyTorch layers' decode step: the hidden states and every part of the in-place state, over several tokens.

TRITON_INTERPRET must be set before triton is first imported (see tests/test_wkv_triton.py). Tolerances:
float32 differs from the layers only in the order of sums (observed ~2e-6 of the largest value). bfloat16 rounds
where the layers round, but the interpreter rounds float32 to bf16 by truncation (a GPU rounds to nearest), so
its errors are about twice the layers' own bf16 error against float32 (observed up to ~0.025 of the largest
value after four tokens); `bench/gpu_check.py` checks bf16 on a GPU.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed; the Triton kernels cannot run")
from triton.runtime.interpreter import InterpretedFunction

if not isinstance(triton.language.cdiv, InterpretedFunction):
    pytest.skip("triton was imported before TRITON_INTERPRET=1 was set", allow_module_level=True)

from rwkv7_provider.model import RWKV7, RWKV7Config, gpu_decode

from rwkv7_provider.testing import random_state_dict

# three layers (layer 0 has no value residual) and heads of 64, as every released model
CONFIG = RWKV7Config(n_layer=3, n_embd=192, vocab_size=300, head_size=64, dim_w=16, dim_a=8, dim_v=8, dim_g=32)


def model_in(dtype: torch.dtype) -> RWKV7:
    with torch.device("meta"):
        model = RWKV7(CONFIG)
    model.load_state_dict(random_state_dict(CONFIG, seed=3), assign=True)
    return model.to(dtype).eval().requires_grad_(False)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 2e-5), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("batch", [1, 3])
def test_fused_step_is_the_layers_step(dtype, tol, batch, monkeypatch):
    model = model_in(dtype)
    monkeypatch.setenv("RWKV7_WKV_IMPL", "reference")  # the layers' side: PyTorch WKV, no fused kernels
    torch.manual_seed(batch)
    fused = model.zero_state(batch)
    for t in fused.tensors():
        t.copy_(0.5 * torch.randn_like(t, dtype=torch.float32))
    layers = fused.clone()
    with torch.inference_mode():
        for step in range(4):
            ids = torch.randint(0, CONFIG.vocab_size, (batch,))
            want = model.decode_step(ids, layers)
            got = gpu_decode.decode_step(model, ids, fused)
            for name, a, b in [("hidden", got, want), *zip(("att_x_prev", "wkv", "ffn_x_prev"), fused.tensors(),
                                                           layers.tensors())]:
                scale = max(1.0, b.float().abs().max().item())
                err = (a.float() - b.float()).abs().max().item()
                assert err <= tol * scale, f"step {step} {name}: error {err:.3g} > {tol} * {scale:.3g}"


def test_only_cuda_models_take_it():
    model = model_in(torch.float32)
    with torch.inference_mode():
        assert not gpu_decode.supported(model, model.zero_state(1))
