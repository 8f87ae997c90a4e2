"""bench/gpu_check.py's engine section runs end to end in its CPU smoke mode (the GPU run is the same code)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def test_engine_section_smoke(tmp_path):
    env = os.environ | {"OUT": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu-smoke", "--only", "engine"],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (tmp_path / "gpu_check.log").read_text()
    assert "all correctness checks passed" in log
    assert log.count("greedy mismatches 0/") == 2  # the random model and the embedded guard
    assert "4 client(s)" in log and "concurrent generations" in log


def test_with_impl_restores_an_unset_choice(monkeypatch):
    """On a GPU the variable is unset (the smoke run sets it): restoring that state raised KeyError on the
    first H200 run, after every engine timing had been printed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # its dataclasses look their module up
    spec.loader.exec_module(gpu_check)
    monkeypatch.delenv("RWKV7_WKV_IMPL", raising=False)
    assert gpu_check.with_impl("torch", lambda: os.environ["RWKV7_WKV_IMPL"]) == "torch"
    assert gpu_check.with_impl(None, lambda: os.environ.get("RWKV7_WKV_IMPL")) is None
    assert "RWKV7_WKV_IMPL" not in os.environ
