"""The distribution: `model/` and `kernels/` install under `rwkv7_provider`, the guard ships inside it,
and an installed (non-editable) copy imports from an unrelated directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True, capture_output=True,
    )
    return next(out.glob("rwkv7_provider-*.whl"))


def test_wheel_layout(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"rwkv7_provider", wheel.name.split("-py")[0] + ".dist-info"}
    for needed in ("model/rwkv7.py", "model/tokenizer.py", "kernels/chunk.py", "kernels/triton_ops.py",
                   "runtime/engine.py", "integrations/guardrails/provider.py", "integrations/langchain/llms.py",
                   "guard/assets/model.safetensors", "guard/assets/tokenizer.json", "guard/assets/MODEL_CARD.md",
                   "guard/card_template.md", "guard/training_data/SOURCES.md",
                   "guard/training_data/input_train.jsonl.gz"):
        assert f"rwkv7_provider/{needed}" in names
    for source in (ROOT / "model" / "csrc").iterdir():  # the kernels build from the installed copy
        assert f"rwkv7_provider/model/csrc/{source.name}" in names


def test_installed_copy_imports_elsewhere(wheel, tmp_path):
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)  # what `pip install` lays down, without touching this venv
    code = (
        "import rwkv7_provider.model as m, rwkv7_provider.kernels as k, rwkv7_provider.runtime.registry as e;"
        "print(m.__file__); print(k.__file__); print(e.resolve_model_path('default'))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         check=True, capture_output=True, text=True).stdout.split()
    assert all(line.startswith(str(target)) for line in out), out
