"""Shared fixtures: random RWKV-7 checkpoints built inside the tests (nothing is downloaded)."""

from __future__ import annotations

import os

os.environ.setdefault("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")
# Triton reads this when a kernel is decorated, so it must be set before anything imports triton
# (torch._dynamo does): the Triton kernels then run on CPU tensors in the interpreter.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch
from rwkv7_provider.model import RWKV7Config
from rwkv7_provider.model.checkpoint import expected_shapes


def random_state_dict(config: RWKV7Config, seed: int = 0, layer0_v: bool = False) -> dict[str, torch.Tensor]:
    """BlinkDL-named random weights with scales that keep activations lively (no trained model needed).

    `layer0_v` adds the unused layer-0 v0/v1/v2 tensors that some released files carry.
    """
    g = torch.Generator().manual_seed(seed)
    C = config.n_embd

    def rand(shape, scale=1.0, offset=0.0):
        return torch.randn(shape, generator=g) * scale + offset

    sd: dict[str, torch.Tensor] = {}
    for name, shape in expected_shapes(config).items():
        leaf = name.rsplit(".", 1)[-1] if not name.endswith((".weight", ".bias")) else name.split(".")[-2]
        if name.endswith(".bias"):
            t = rand(shape, 0.1)
        elif leaf in ("ln0", "ln1", "ln2", "ln_x", "ln_out"):
            t = rand(shape, 0.1, 1.0)
        elif leaf.startswith("x_"):
            t = torch.rand(shape, generator=g)
        elif leaf in ("w0", "a0", "v0"):
            t = rand(shape, 0.5)
        elif leaf in ("w1", "a1", "v1", "g1", "w2", "a2", "v2", "g2"):
            t = rand(shape, 0.1)
        elif leaf == "k_k":
            t = rand(shape, 0.1, 0.85)
        elif leaf == "k_a":
            t = rand(shape, 0.1, 1.0)
        elif leaf == "r_k":
            t = rand(shape, 0.3)
        elif leaf == "emb":
            t = rand(shape, 1.0)
        else:  # square and FFN matrices, head
            t = rand(shape, 1.0 / shape[1] ** 0.5)
        sd[name] = t.float()
    if layer0_v:
        D = config.dim_v
        sd["blocks.0.att.v0"] = rand((1, 1, C), 0.5)
        sd["blocks.0.att.v1"] = rand((C, D), 0.1)
        sd["blocks.0.att.v2"] = rand((D, C), 0.1)
    return sd


SMALL = RWKV7Config(n_layer=2, n_embd=128, vocab_size=300, head_size=64, dim_w=16, dim_a=8, dim_v=8, dim_g=32)
WIDER = RWKV7Config(n_layer=3, n_embd=192, vocab_size=500, head_size=64, dim_w=24, dim_a=16, dim_v=12, dim_g=48)


@pytest.fixture
def small_pth(tmp_path):
    """A random BlinkDL .pth (with the unused layer-0 v* tensors) and its config."""
    path = tmp_path / "small.pth"
    torch.save(random_state_dict(SMALL, seed=1, layer0_v=True), path)
    return path, SMALL
