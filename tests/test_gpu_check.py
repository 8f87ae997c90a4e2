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
