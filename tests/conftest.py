"""Shared fixtures: random RWKV-7 checkpoints built inside the tests (nothing is downloaded)."""

from __future__ import annotations

import os

os.environ.setdefault("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")
# Triton reads this when a kernel is decorated, so it must be set before anything imports triton
# (torch._dynamo does): the Triton kernels then run on CPU tensors in the interpreter.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

from rwkv7_provider.testing import SMALL, random_state_dict


@pytest.fixture
def small_pth(tmp_path):
    """A random BlinkDL .pth (with the unused layer-0 v* tensors) and its config."""
    path = tmp_path / "small.pth"
    torch.save(random_state_dict(SMALL, seed=1, layer0_v=True), path)
    return path, SMALL
