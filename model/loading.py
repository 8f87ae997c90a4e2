"""Building a model from a checkpoint: memory estimate first, then one tensor at a time to its target form.

`RWKV7.from_pretrained` is the entry point (it passes its own class in, so this module never imports the
model). The order matters for big checkpoints: `inspect_checkpoint` reads headers only, `estimate_memory`
computes what the model will take in the chosen dtype / format, and a model that cannot fit fails with
`InsufficientMemoryError` (need vs available, and the formats that would fit) before a byte of weights is
read, instead of the process being killed halfway. Tensors are then read one by one (memory-mapped .pth,
safetensors slices), converted straight to the target device and dtype or quantised, and assigned: peak
memory is the model plus one tensor in flight, never a full float32 copy of the checkpoint.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, InsufficientMemoryError, ParameterError
from .checkpoint import CheckpointInfo, default_dtype, inspect_checkpoint
from .cpu_features import gemm_dtype
from .quantize import (
    FORMATS,
    GemvLinear,
    PackedLinear,
    check_format,
    pack,
    packable,
    packed_nbytes,
    prefill_block_rows,
)

log = logging.getLogger(__name__)

# The matrices a `quantize` format compresses: everything a decode step reads except LoRAs and vectors.
PACKED_NAMES = re.compile(r"(blocks\.\d+\.(att\.(receptance|key|value|output)|ffn\.(key|value))|head)\.weight")
# TimeMix's LoRA matrices, which a `quantize` format keeps in bfloat16: lossless for checkpoints stored in bf16
# (all released ones), and half of the 1.8 MB per layer a 0.1B decode step reads for them in float32.
LORA_NAMES = re.compile(r"blocks\.\d+\.att\.[wavg][12]")
# Working memory on top of the weights: torch and the tokenizer, plus the activations of a 1024-token
# prefill chunk (~16 live tensors of [T, ffn_dim] floats).
BASE_WORKING_BYTES = 256 << 20
PREFILL_TOKENS, LIVE_ACTIVATIONS = 1024, 16
GIB = 1 << 30


@dataclass(frozen=True)
class MemoryEstimate:
    """What loading a checkpoint on `device` in `dtype` / `quantize` format will take, in bytes."""

    device: torch.device
    dtype: torch.dtype
    quantize: str | None
    weights_bytes: int  # the model's tensors, exact
    working_bytes: int  # runtime margin: activations, dequantisation scratch for compressed prefill

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.working_bytes

    @property
    def label(self) -> str:
        return f"quantize={self.quantize!r}" if self.quantize else str(self.dtype).removeprefix("torch.")


def packed_names(info: CheckpointInfo, fmt: str | None) -> set[str]:
    """The matrices stored in `fmt` (those whose rows split into whole groups)."""
    if fmt is None:
        return set()
    return {n for n, e in info.tensors.items() if PACKED_NAMES.fullmatch(n) and packable(fmt, e.shape[1])}


def tensor_dtype(name: str, dtype: torch.dtype, fmt: str | None) -> torch.dtype:
    """The dtype a tensor that is not packed is kept in: `dtype`, bfloat16 for the LoRAs of a compressed model."""
    return torch.bfloat16 if fmt is not None and LORA_NAMES.fullmatch(name) else dtype


def estimate_memory(
    checkpoint: str | Path | CheckpointInfo,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    quantize: str | None = None,
) -> MemoryEstimate:
    """The memory a model will need, from the checkpoint's headers alone (no weights are read)."""
    info = checkpoint if isinstance(checkpoint, CheckpointInfo) else inspect_checkpoint(checkpoint)
    device, fmt = torch.device(device), check_format(quantize)
    dtype = dtype or default_dtype(device, info.stored_dtype)
    packed = packed_names(info, fmt)
    weights = 0
    for name, e in info.tensors.items():
        if name in packed:
            weights += packed_nbytes(fmt, *e.shape)
        else:
            weights += e.numel * tensor_dtype(name, dtype, fmt).itemsize
    # prefill dequantises a packed matrix a block of rows at a time (a float32 block at most)
    scratch = max((prefill_block_rows(info.tensors[n].shape[1], torch.float32) * info.tensors[n].shape[1] * 4
                   for n in packed), default=0)
    activations = LIVE_ACTIVATIONS * PREFILL_TOKENS * info.config.ffn_dim * dtype.itemsize
    return MemoryEstimate(device, dtype, fmt, weights, BASE_WORKING_BYTES + activations + scratch)


def _cgroup_headroom() -> int | None:
    """Bytes left under a cgroup v2 memory limit (containers), if there is one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None


def available_memory(device: torch.device | str) -> int | None:
    """Free memory for a model on `device`: host RAM (MemAvailable) for CPU, free GPU memory for CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        meminfo = Path("/proc/meminfo").read_text()
        free = int(re.search(r"MemAvailable:\s+(\d+) kB", meminfo).group(1)) * 1024
    except (OSError, AttributeError):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    headroom = _cgroup_headroom()
    return free if headroom is None else min(free, headroom)


def check_memory(info: CheckpointInfo, estimate: MemoryEstimate) -> None:
    """Raise `InsufficientMemoryError` when the estimate exceeds what the device has free."""
    free = available_memory(estimate.device)
    if free is None or estimate.total_bytes <= free:
        return
    where = "free GPU memory" if estimate.device.type == "cuda" else "host RAM"
    message = (
        f"loading {info.path.name} ({info.n_params / 1e9:.2f}B parameters) as {estimate.label} on "
        f"{estimate.device} needs about {estimate.total_bytes / GIB:.1f} GiB ({estimate.weights_bytes / GIB:.1f} GiB "
        f"of weights + {estimate.working_bytes / GIB:.1f} GiB working memory), but only {free / GIB:.1f} GiB of "
        f"{where} is available"
    )
    if estimate.device.type == "cpu":
        options = [estimate_memory(info, dtype=estimate.dtype, quantize=f) for f in FORMATS]
        fits = [f"quantize={o.quantize!r} (about {o.total_bytes / GIB:.1f} GiB)" for o in options if o.total_bytes <= free]
        message += f"; it would fit with {' or '.join(fits)}" if fits else "; even the smallest format does not fit"
    elif estimate.dtype == torch.float32:
        message += "; try dtype=torch.bfloat16"
    raise InsufficientMemoryError(message)


def load_model(
    cls: type[nn.Module],
    path: str | Path,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    quantize: str | None = None,
    compute_dtype: torch.dtype | str | None = None,
) -> nn.Module:
    """Build `cls(config)` from any supported checkpoint; see `RWKV7.from_pretrained` for the arguments."""
    device, fmt = torch.device(device), check_format(quantize)
    if fmt is not None and device.type != "cpu":
        raise ParameterError(f"quantize={fmt!r} is a CPU decode format; on {device} pass dtype=torch.bfloat16 instead")
    info = inspect_checkpoint(path)
    estimate = estimate_memory(info, dtype=dtype, device=device, quantize=fmt)
    check_memory(info, estimate)
    dtype, compute = estimate.dtype, gemm_dtype(compute_dtype) if fmt else None
    log.info("loading RWKV-7 %s from %s as %s on %s (%.2f GiB)", info.config, info.path, estimate.label, device,
             estimate.weights_bytes / GIB)
    with torch.device("meta"):
        model = cls(info.config)
    packed = packed_names(info, fmt)
    fast_fp32 = fmt is None and device.type == "cpu" and dtype == torch.float32
    total, done, reported = info.stored_bytes, 0, 0
    for name, entry in info.tensors.items():
        try:
            t = entry.read()
        except Exception as e:  # a corrupt or truncated tensor inside a readable archive
            raise CheckpointError(f"{info.path}: cannot read tensor {name!r}: {type(e).__name__}: {e}") from e
        owner, _, leaf = name.rpartition(".")
        parent, _, child = owner.rpartition(".")
        if name in packed:
            layer = PackedLinear(t.shape[1], t.shape[0], fmt, compute)
            layer.weight, layer.scales, layer.minimums = pack(t, fmt)
            setattr(model.get_submodule(parent), child, layer)
        elif fast_fp32 and PACKED_NAMES.fullmatch(name):  # decode's big matrices: the GEMV for few rows
            layer = GemvLinear(t.shape[1], t.shape[0], bias=False, device="meta")
            layer.weight = nn.Parameter(t.to(dtype=dtype, copy=True), requires_grad=False)
            setattr(model.get_submodule(parent), child, layer)
        else:
            # a copy: never keep a view of the file's mmap
            value = t.to(device=device, dtype=tensor_dtype(name, dtype, fmt), copy=True)
            setattr(model.get_submodule(owner), leaf, nn.Parameter(value, requires_grad=False))
        done += entry.numel * entry.dtype.itemsize
        if total > GIB and done * 10 // total > reported:
            reported = done * 10 // total
            log.info("loading %s: %d%%", info.path.name, 10 * reported)
    return model.eval()
