"""One settings model: `EngineSettings` is what get_engine, Engine and every front end take, and each of its
rules, the ones between two settings included, fails when a guardrails config loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from nemoguardrails import LLMRails, RailsConfig

from rwkv7_provider import RWKV7LLM
from rwkv7_provider.errors import ParameterError
from rwkv7_provider.integrations.settings import ProviderSettings
from rwkv7_provider.model import RWKV7
from rwkv7_provider.runtime import registry
from rwkv7_provider.runtime.engine import Engine
from rwkv7_provider.runtime.options import GenerationOptions
from rwkv7_provider.runtime.settings import EngineSettings
from rwkv7_provider.testing import MergeTokenizer, make_checkpoint, merge_model

ROOT = Path(__file__).resolve().parents[1]
TOK = MergeTokenizer()


def test_every_engine_setting_is_a_provider_parameter_once():
    engine, options = set(EngineSettings.model_fields), set(GenerationOptions.model_fields)
    assert not engine & options, "a name in both schemas would be one parameter with two meanings"
    assert engine | options | {"model", "max_tokens_limit", "choices", "block_threshold", "unfamiliar_script"} == set(ProviderSettings.model_fields)


def test_readme_documents_every_parameter():
    """The README's `parameters:` table is where users look; a new field without a row fails here."""
    section = (ROOT / "README.md").read_text().split("## Use it with NeMo Guardrails")[1].split("\n## ")[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    documented = {name for cell in rows for name in re.findall(r"`(\w+)`", cell)}
    assert set(ProviderSettings.model_fields) - {"model"} <= documented


@pytest.fixture
def no_loading(monkeypatch):
    """Config-load errors must come before any weight is read."""

    def refuse(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before the settings were checked")

    monkeypatch.setattr(RWKV7, "from_pretrained", refuse)


@pytest.fixture
def fake_gpu(monkeypatch):
    """A machine with one CUDA device, as far as the settings' device check can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"quantize": "int8", "device": "cuda"}, "CPU decode format; on cuda use dtype: bfloat16"),
        ({"compute_dtype": "float16", "quantize": "int8"}, "compute_dtype must be float32 or bfloat16"),
        ({"compute_dtype": "bfloat16"}, "set quantize too"),
        ({"cuda_graphs": True}, "cuda_graphs needs device: cuda"),
        ({"max_wait": float("nan")}, "max_wait: Input should be a finite number"),
        ({"threads": "2"}, "threads: Input should be a valid integer"),
        ({"cache_byte": 0}, "did you mean 'cache_bytes'"),
    ],
)
def test_rules_fail_when_the_config_loads(parameters, message, no_loading, fake_gpu):
    config = RailsConfig.from_path(str(ROOT / "configs" / "moderation"))
    (entry,) = [m for m in config.models if m.type == "self_check_input"]
    entry.parameters = dict(entry.parameters) | parameters
    with pytest.raises(ParameterError, match=message):
        LLMRails(config)
    with pytest.raises(ParameterError, match=message):
        RWKV7LLM(model="default", **parameters)
    with pytest.raises(ParameterError, match=message):
        registry.get_engine("default", **parameters)


def test_engine_takes_the_settings_whole_or_as_keywords():
    model = merge_model()
    settings = EngineSettings(max_wait=0.05, max_batch_size=3, cache_bytes=0, snapshot_every=8)
    whole, keywords = Engine(model, TOK, settings), Engine(model, TOK, max_wait=0.05, max_batch_size=3,
                                                          cache_bytes=0, snapshot_every=8)
    for engine in (whole, keywords):
        assert (engine.scheduler.max_wait, engine.scheduler.max_batch_size, engine.snapshot_every) == (0.05, 3, 8)
        assert engine.cache.stats().budget_bytes == 0
    with pytest.raises(ParameterError, match="quantize apply when a checkpoint loads"):
        Engine(model, TOK, quantize="int8")  # the model is loaded already: it would be silently ignored
    with pytest.raises(ParameterError, match="not both"):
        Engine(model, TOK, settings, max_wait=0)
    with pytest.raises(ParameterError, match="max_wait"):
        Engine(model, TOK, max_wait="0.1")
    with pytest.raises(ParameterError, match="for device 'cuda' but the model is on cpu"):
        Engine(model, TOK, EngineSettings.model_construct(**(settings.model_dump() | {"device": "cuda"})))


def test_get_engine_takes_the_settings_whole_or_as_keywords(tmp_path):
    path = str(make_checkpoint(tmp_path / "tiny"))
    settings = EngineSettings(dtype="fp32", cache_bytes=1 << 20, max_prompt_tokens=64)
    engine = registry.get_engine(path, settings)
    assert registry.get_engine(path, dtype=torch.float32, cache_bytes=1 << 20, max_prompt_tokens=64) is engine
    assert engine.max_prompt_tokens == 64 and engine.settings.cache_bytes == 1 << 20
    with pytest.raises(ParameterError, match="not both"):
        registry.get_engine(path, settings, max_wait=0)
