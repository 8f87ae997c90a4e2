"""The CPU decode kernels of `csrc/cpu_kernels.cpp`, compiled once per machine on first use.

Why a small C++ extension: decoding reads every weight once per token, so only a matrix-vector kernel that
reads fewer bytes per weight makes it faster, and none of the maintained options does that on CPU here:
torch's `_weight_int8pack_mm` / `_weight_int4pack_mm_for_cpu` are 4-14x slower than the fp32 GEMV at M = 1,
bitsandbytes' CPU GEMV is 4-bit only, needs AVX512-BF16 and downloads its fast kernel from a model hub, the
torchao wheel ships no x86 CPU kernels, and ONNX Runtime / llama.cpp run whole graphs, not one torch layer.
The kernels: a GEMV over bf16 / int8 / q4 / f32 weights with f32 activations (AVX-512, AVX2 or portable C++,
chosen at run time from the CPU's features), its blocked form for prefill GEMMs of compressed weights, and the
fused per-token ops of a decode step (two ops instead of ~30 per layer besides the GEMVs).

The build is `torch.utils.cpp_extension` (ninja + the system C++ compiler) into a cache directory keyed by
the source and torch version (`RWKV7_KERNEL_DIR` or ~/.cache/rwkv7_provider/kernels). Without a compiler
`available()` is False, one warning says why, and callers fall back to plain torch: same results, slower.
`RWKV7_CPU_KERNELS=0` disables the kernels (tests of the fallback path); `RWKV7_CPU_ISA=avx2` or `portable`
caps the instruction set (tests run every code path on one machine).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "cpu_kernels.cpp"
# Weight format codes shared with the C++ side.
F32, BF16, INT8, Q4 = 0, 1, 2, 3
ISA_NAMES = ("portable", "avx2", "avx512")

_lock = threading.Lock()
_state: dict[str, object] = {}


def _build_dir(digest: str) -> Path:
    root = os.environ.get("RWKV7_KERNEL_DIR") or Path.home() / ".cache" / "rwkv7_provider" / "kernels"
    return Path(root) / digest


def _build() -> None:
    from torch.utils.cpp_extension import load

    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + torch.__version__.encode()).hexdigest()[:16]
    build_dir = _build_dir(digest)
    build_dir.mkdir(parents=True, exist_ok=True)
    if not any(build_dir.glob("*.so")):
        log.info("compiling the CPU decode kernels into %s (once per machine, ~20 s)", build_dir)
    load(
        name=f"rwkv7_cpu_{digest}",
        sources=[str(SOURCE)],
        extra_cflags=["-O3", "-std=c++17"],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=False,
    )


def available() -> bool:
    """True when the compiled kernels are loaded (building them on the first call)."""
    with _lock:
        if "ok" not in _state:
            if os.environ.get("RWKV7_CPU_KERNELS", "1") == "0":
                _state["ok"], _state["why"] = False, "disabled by RWKV7_CPU_KERNELS=0"
            else:
                try:
                    _build()
                    _state["ok"] = True
                except (OSError, RuntimeError, ImportError, subprocess.SubprocessError) as e:  # no compiler / ninja
                    _state["ok"], _state["why"] = False, f"{type(e).__name__}: {str(e).strip()[-300:]}"
            if not _state["ok"]:
                log.warning(
                    "CPU decode kernels unavailable (%s); compressed weights fall back to dequantising in "
                    "torch, which is slower than float32. Install a C++ compiler (g++) to enable them.",
                    _state["why"],
                )
        return bool(_state["ok"])


def isa() -> str:
    """The instruction set the kernels dispatch to on this CPU ("avx512", "avx2" or "portable")."""
    return ISA_NAMES[torch.ops.rwkv7_cpu.isa()] if available() else "unavailable"


def gemv(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, fmt: int) -> torch.Tensor:
    """x [M, K] float32 @ W^T -> [M, N] float32, W stored in format `fmt`."""
    return torch.ops.rwkv7_cpu.gemv(x, weight, scales, mins, fmt)


def dequantize(
    weight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, fmt: int, in_features: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """W as a dense [N, K] tensor in `dtype` (float32, or bfloat16 rounded to nearest even like `.to()`)."""
    return torch.ops.rwkv7_cpu.dequantize(weight, scales, mins, fmt, in_features, dtype)


def linear(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, fmt: int, block: int) -> torch.Tensor:
    """x [M, K] @ W^T -> [M, N] in x's dtype (float32 / bfloat16), dequantising `block` rows of W at a time."""
    return torch.ops.rwkv7_cpu.linear(x, weight, scales, mins, fmt, block)


def shift_mix_(
    x: torch.Tensor, x_prev: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, eps: float, mixes: list[torch.Tensor]
) -> torch.Tensor:
    """LayerNorm of x [B, C] and the token-shift interpolations with each mix vector -> [len(mixes), B, C];
    x_prev becomes the normalised x (in place)."""
    return torch.ops.rwkv7_cpu.shift_mix_(x, x_prev, ln_w, ln_b, eps, mixes)


def time_mix_(
    state: torch.Tensor, mixed: torch.Tensor, r: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    v_first: torch.Tensor, params: list[torch.Tensor], eps: float,
) -> torch.Tensor:
    """TimeMix of one decode step after the r / k / v GEMVs (LoRAs, value residual, WKV state update in place,
    GroupNorm, bonus, gate) -> [B, C], the output projection's input; see the C++ source for `params`."""
    return torch.ops.rwkv7_cpu.time_mix_(state, mixed, r, k, v, v_first, params, eps)
