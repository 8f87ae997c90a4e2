"""Loading: validation from headers (inspect_checkpoint), the memory estimate and its clear error."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from rwkv7_provider.model import (
    RWKV7,
    CheckpointError,
    InsufficientMemoryError,
    estimate_memory,
    inspect_checkpoint,
    loading,
)

from rwkv7_provider.testing import SMALL, WIDER, random_state_dict


def _actual_bytes(model: RWKV7) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


@pytest.mark.parametrize("config", [SMALL, WIDER], ids=["small", "wider"])
@pytest.mark.parametrize("fmt", [None, "bf16", "int8", "q4"])
def test_estimate_equals_the_loaded_size(tmp_path, config, fmt):
    path = tmp_path / "m.pth"
    torch.save({k: v.to(torch.bfloat16) for k, v in random_state_dict(config).items()}, path)
    estimate = estimate_memory(path, quantize=fmt)
    model = RWKV7.from_pretrained(path, quantize=fmt)
    assert estimate.weights_bytes == _actual_bytes(model)
    assert estimate.dtype == torch.float32 and estimate.working_bytes > 0
    # and it is not the size of the file: float32 doubles the bf16 checkpoint, the formats shrink it
    assert estimate.weights_bytes != inspect_checkpoint(path).stored_bytes


def test_estimate_for_safetensors_in_bf16(tmp_path):
    model = RWKV7.from_pretrained(_pth(tmp_path))
    model.save_pretrained(tmp_path / "hf", dtype=torch.bfloat16)
    estimate = estimate_memory(tmp_path / "hf", dtype=torch.bfloat16)
    assert estimate.weights_bytes == _actual_bytes(RWKV7.from_pretrained(tmp_path / "hf", dtype=torch.bfloat16))


def _pth(tmp_path: Path) -> Path:
    path = tmp_path / "small.pth"
    torch.save(random_state_dict(SMALL), path)
    return path


def test_too_big_fails_before_reading_weights_with_need_and_available(tmp_path, monkeypatch):
    path = _pth(tmp_path)
    need = estimate_memory(path)
    int8 = estimate_memory(path, quantize="int8")
    monkeypatch.setattr(loading, "available_memory", lambda device: int8.total_bytes)
    read = []
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: read.append(1))  # any weight conversion
    with pytest.raises(InsufficientMemoryError) as info:
        RWKV7.from_pretrained(path)
    message = str(info.value)
    assert f"needs about {need.total_bytes / 2**30:.1f} GiB" in message
    assert f"only {int8.total_bytes / 2**30:.1f} GiB of host RAM is available" in message
    assert "quantize='int8'" in message and "quantize='bf16'" not in message  # bf16 would not fit either
    assert not read
    assert isinstance(info.value, CheckpointError)  # callers that catch checkpoint errors catch this too


def test_available_memory_is_positive_on_this_machine():
    assert loading.available_memory("cpu") > 0


def test_inspect_reads_headers_only(tmp_path):
    path = _pth(tmp_path)
    info = inspect_checkpoint(path)
    assert info.config == SMALL and info.kind == "pth" and info.stored_dtype == torch.float32
    assert info.n_params == sum(t.numel() for t in random_state_dict(SMALL).values())
    RWKV7.from_pretrained(path).save_pretrained(tmp_path / "hf")
    st = tmp_path / "hf" / "model.safetensors"
    header_len = int.from_bytes(st.read_bytes()[:8], "little")
    data = bytearray(st.read_bytes())
    data[8 + header_len :] = b"\xff" * (len(data) - 8 - header_len)  # every weight NaN: the header is intact
    st.write_bytes(bytes(data))
    assert inspect_checkpoint(tmp_path / "hf").config == SMALL


def test_inspect_rejects_what_would_pass_config_load(tmp_path):
    (tmp_path / "notes.pth").write_text("this is a text file, renamed")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        inspect_checkpoint(tmp_path / "notes.pth")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps({"model_type": "rwkv7"}))
    with pytest.raises(CheckpointError, match="has no model.safetensors or pytorch_model.bin"):
        inspect_checkpoint(tmp_path / "empty")
    rwkv4 = {"emb.weight": torch.zeros(8, 4), "blocks.0.att.time_decay": torch.zeros(4),
             "blocks.0.att.time_first": torch.zeros(4), "blocks.0.att.time_mix_k": torch.zeros(1, 1, 4)}
    torch.save(rwkv4, tmp_path / "rwkv4.pth")
    with pytest.raises(CheckpointError, match="RWKV-4/5/6"):
        inspect_checkpoint(tmp_path / "rwkv4.pth")
    torch.save({"emb.weight": torch.zeros(8, 4, dtype=torch.long)}, tmp_path / "ints.pth")
    with pytest.raises(CheckpointError, match="not floating point"):
        inspect_checkpoint(tmp_path / "ints.pth")
    (tmp_path / "bad_index").mkdir()
    (tmp_path / "bad_index" / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a valid safetensors index"):
        inspect_checkpoint(tmp_path / "bad_index")


def test_loading_and_checkpoint_do_not_import_the_model():
    """No import cycle: checkpoint.py and loading.py never import rwkv7.py (from_pretrained passes its class)."""
    model_dir = Path(loading.__file__).parent
    for name in ("checkpoint.py", "loading.py", "quantize.py"):
        tree = ast.parse((model_dir / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "rwkv7" not in imported, name
