"""What this CPU does well, detected at run time: the sessions' machines range from AVX2-only to AMX.

`gemm_dtype()` is the dtype for the prefill / scoring GEMMs of compressed models: bfloat16 only where the
CPU has native bf16 arithmetic (AVX512-BF16 or AMX) AND torch's bf16 GEMM measures faster than float32 here
(on an AVX2-only CPU it is ~100x slower; on Zen 4 ~2.5x faster, on AMX ~6x). `RWKV7_COMPUTE_DTYPE`
(float32 / bfloat16) overrides the choice for the process.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..dtypes import torch_dtype
from ..errors import ParameterError

log = logging.getLogger(__name__)

# bf16 must beat float32 by this much to be chosen: it rounds activations, so a tie is not worth it.
BF16_MIN_SPEEDUP = 1.3
COMPUTE_DTYPES = (torch.float32, torch.bfloat16)


# The flags that decide which kernels can run and how fast: what benchmarks print beside their numbers.
VECTOR_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16",
                "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve")


@dataclass(frozen=True)
class CpuFeatures:
    avx2: bool
    avx512: bool  # AVX-512 F, BW, VL, DQ
    avx512_bf16: bool
    amx_bf16: bool
    name: str = "unknown CPU"  # model name, with family / model numbers where the name alone is vague
    flags: frozenset[str] = frozenset()

    @property
    def native_bf16(self) -> bool:
        return self.avx512_bf16 or self.amx_bf16

    def vector_flags(self) -> str:
        """The SIMD flags of VECTOR_FLAGS this CPU has, space-separated."""
        return " ".join(f for f in VECTOR_FLAGS if f in self.flags) or "none reported"


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (Linux); empty elsewhere."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


@functools.cache
def cpu_features() -> CpuFeatures:
    """Flags from /proc/cpuinfo (Linux); elsewhere, what torch's own dispatch detected."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if "cpu family" in info and "model" in info:
        name += f" (family {info['cpu family']}, model {info['model']})"
    if "flags" not in info and "Features" not in info:
        capability = torch.backends.cpu.get_cpu_capability()
        return CpuFeatures(capability in ("AVX2", "AVX512"), capability == "AVX512", False, False, name)
    flags = frozenset((info.get("flags") or info.get("Features", "")).split())
    return CpuFeatures(
        avx2="avx2" in flags,
        avx512={"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags,
        avx512_bf16="avx512_bf16" in flags,
        amx_bf16="amx_bf16" in flags,
        name=name,
        flags=flags,
    )


def parse_compute_dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    """float32 / bfloat16, as a torch dtype or any spelling in `dtypes.DTYPE_NAMES`; None stays None."""
    if isinstance(value, str):
        value = torch_dtype(value)
    if value is not None and value not in COMPUTE_DTYPES:
        raise ParameterError(f"compute_dtype must be float32 or bfloat16, got {value!r}")
    return value


def _gemm_seconds(dtype: torch.dtype) -> float:
    """Best of 3: [256 x 1024] @ [1024 x 1024], a prefill-sized GEMM (about 10 ms in float32)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 1024, generator=g).to(dtype), torch.randn(1024, 1024, generator=g).to(dtype)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(4):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    return best


@functools.cache
def measured_gemm_dtype() -> torch.dtype:
    if not cpu_features().native_bf16:
        return torch.float32
    fp32, bf16 = _gemm_seconds(torch.float32), _gemm_seconds(torch.bfloat16)
    choice = torch.bfloat16 if fp32 >= BF16_MIN_SPEEDUP * bf16 else torch.float32
    log.info("CPU GEMM: float32 %.2f ms, bfloat16 %.2f ms -> %s for prefill", 1e3 * fp32, 1e3 * bf16, choice)
    return choice


def gemm_dtype(override: torch.dtype | str | None = None) -> torch.dtype:
    """The prefill GEMM dtype: `override`, else RWKV7_COMPUTE_DTYPE, else measured once per process."""
    chosen = parse_compute_dtype(override) or parse_compute_dtype(os.environ.get("RWKV7_COMPUTE_DTYPE") or None)
    return chosen or measured_gemm_dtype()
