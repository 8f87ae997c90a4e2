"""Hostile input (issue 10): odd strings, bad settings at config load, threads, missing optional packages.

The cache's filesystem faults and checksums are in test_cache.py; long prompts in the serving tests.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from nemoguardrails import LLMRails, RailsConfig
from rwkv7_provider.model.tokenizer import WorldTokenizer, encodable

from rwkv7_provider import RWKV7LLM, ChatRWKV7
from rwkv7_provider.errors import CheckpointError, ParameterError
from rwkv7_provider.guardrails import RWKV7Model
from rwkv7_provider.runtime.registry import default_threads, get_engine
from rwkv7_provider.testing import make_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LONE = "hello \ud800 world \udfff"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    return str(make_checkpoint(tmp_path_factory.mktemp("hardening") / "chat", seed=5))


# ---------------------------------------------------------------- any str is accepted


def test_lone_surrogates_become_replacement_characters():
    assert encodable(LONE) == "hello \ufffd world \ufffd"
    assert encodable("\ud83d\ude00") == "\U0001f600"  # a pair written as two code units is one character
    assert encodable("plain") == "plain"
    world = WorldTokenizer()
    assert world.encode(LONE) == world.encode("hello \ufffd world \ufffd")


def test_lone_surrogates_through_engine_rails_and_langchain(ckpt):
    engine = get_engine(ckpt)
    assert engine.generate(LONE, max_tokens=2, temperature=0).completion_tokens == 2
    assert engine.score(LONE, ["Yes", "No"]).best in ("Yes", "No")
    provider = RWKV7Model(ckpt, max_tokens=2, temperature=0)
    assert asyncio.run(provider.generate_async(LONE)).usage.output_tokens == 2
    assert isinstance(RWKV7LLM(model=ckpt, max_tokens=2).invoke(LONE), str)
    assert isinstance(ChatRWKV7(model=ckpt, max_tokens=2).invoke(LONE).content, str)


# ---------------------------------------------------------------- settings fail when the config loads


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"device": "cuda"}, "no usable CUDA GPU"),
        ({"tokenizer": "/no/such/tokenizer.json"}, "tokenizer file not found"),
        ({"threads": 0}, "threads"),
    ],
)
def test_engine_settings_fail_at_config_load_with_their_own_message(ckpt, parameters, message):
    if parameters.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: 'cuda' is a valid device here")
    config = RailsConfig.from_path(str(CONFIGS / "moderation"))  # its config.py pre-warms in init(app)
    entry = next(m for m in config.models if m.engine == "rwkv7")
    entry.model = ckpt
    entry.parameters = dict(entry.parameters) | parameters
    with pytest.raises(ParameterError, match=message):  # not "Failed to initialize configuration module"
        LLMRails(config)
    with pytest.raises(ParameterError, match=message):
        RWKV7LLM(model=ckpt, **parameters)


def test_langchain_constructors_raise_package_errors(tmp_path):
    with pytest.raises(ParameterError, match="did you mean 'temperature'"):
        RWKV7LLM(model="default", temprature=0)
    with pytest.raises(ParameterError, match="top_p"):
        ChatRWKV7(model="default", top_p=3)
    with pytest.raises(CheckpointError, match="checkpoint not found"):  # at construction, not at invoke
        ChatRWKV7(model=str(tmp_path / "missing.pth"))


def broken_checkpoints(root: Path) -> dict[str, tuple[Path, str]]:
    """What a user may point `model:` at by mistake, and the words its error must contain."""
    (root / "notes.pth").write_text("this is a text file, renamed")
    (root / "empty").mkdir()
    (root / "empty" / "config.json").write_text('{"model_type": "rwkv7"}')
    rwkv4 = {"emb.weight": torch.zeros(8, 4), "blocks.0.att.time_decay": torch.zeros(4),
             "blocks.0.att.time_first": torch.zeros(4), "blocks.0.att.time_mix_k": torch.zeros(1, 1, 4)}
    torch.save(rwkv4, root / "rwkv4.pth")
    return {
        "text file": (root / "notes.pth", "not a readable checkpoint"),
        "folder without weights": (root / "empty", "has no model.safetensors"),
        "RWKV-4 file": (root / "rwkv4.pth", "RWKV-4/5/6"),
    }


@pytest.mark.parametrize("kind", ["text file", "folder without weights", "RWKV-4 file"])
def test_broken_checkpoints_fail_at_config_load(tmp_path, kind):
    path, message = broken_checkpoints(tmp_path)[kind]
    config = RailsConfig.from_path(str(CONFIGS / "moderation"))
    config.models[0].model = str(path)
    with pytest.raises(CheckpointError, match=message):
        LLMRails(config)
    with pytest.raises(CheckpointError, match=message):
        RWKV7LLM(model=str(path))


def test_a_model_too_big_for_the_machine_fails_at_config_load(ckpt, monkeypatch):
    from rwkv7_provider.model import loading

    monkeypatch.setattr(loading, "available_memory", lambda device: 1 << 20)  # 1 MiB free
    with pytest.raises(CheckpointError, match="needs about .* GiB .* only 0.0 GiB of host RAM"):
        RWKV7Model(ckpt)


# ---------------------------------------------------------------- threads


def test_threads_parameter_sets_torch_threads(ckpt):
    before = torch.get_num_threads()
    try:
        RWKV7LLM(model=ckpt, threads=1, max_tokens=1).invoke("hi")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_default_threads_leave_half_the_cores():
    usable = len(os.sched_getaffinity(0))
    assert default_threads() == max(1, usable // 2)


# ---------------------------------------------------------------- optional packages


@pytest.mark.parametrize(
    "missing, code, extra, requirement",
    [
        ("nemoguardrails", "import rwkv7_provider.guardrails", "guardrails", "'nemoguardrails<0.25,>=0.24'"),
        ("langchain_core", "from rwkv7_provider import RWKV7LLM", "langchain", "'langchain-core<2,>=1.0'"),
    ],
)
def test_missing_optional_package_says_how_to_install_it(missing, code, extra, requirement):
    """The package is on no index: the message gives the extra's pinned requirement and the checkout / wheel
    forms, never `pip install 'rwkv7-provider[...]'`."""
    script = (f"import sys\nsys.modules[{missing!r}] = None\n"  # as if it were not installed
              f"from rwkv7_provider.errors import MissingDependencyError\n"
              f"try:\n    {code}\nexcept MissingDependencyError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert f"`{missing}`" in done.stdout
    assert f"pip install {requirement}" in done.stdout
    assert f"pip install '.[{extra}]'" in done.stdout and f".whl[{extra}]'" in done.stdout
    assert "rwkv7-provider[" not in done.stdout
