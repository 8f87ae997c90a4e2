"""What tells benchmark numbers from different machines and sessions apart: every script prints these lines."""

from __future__ import annotations

import os

import torch


def load_average() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def machine_lines(threads: int | None) -> list[str]:
    """CPU model, usable cores, SIMD flags, torch version and threads (None: set per model or replica), the CPU
    kernels' instruction sets."""
    from rwkv7_provider.model import cpu_kernels
    from rwkv7_provider.model.cpu_features import cpu_features

    cpu = cpu_features()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    kernels = cpu_kernels.status()
    return [
        f"CPU: {cpu.name}; {usable} usable cores; SIMD flags: {cpu.vector_flags()}",
        f"torch {torch.__version__}" + (f", {threads} threads" if threads else "") + "; CPU kernels: "
        + (f"instruction sets {', '.join(kernels.isas)} ({kernels.path})" if kernels.ok else f"unavailable ({kernels.why})"),
    ]
