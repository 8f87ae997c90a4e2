"""Compressed weight formats for CPU decoding and `PackedLinear`, the Linear layer that stores them.

Decoding one token reads every weight once, so on a CPU its speed is memory bandwidth divided by the bytes per
weight. The formats (bytes per weight, vs 4 for float32):
    "bf16"  2       the weight rounded to bfloat16; lossless for checkpoints stored in bf16 (all released ones)
    "int8"  1.03    per 64 weights of a row, one bf16 scale s and w = q * s, q in [-127, 127]
    "q4"    0.625   per 32 weights of a row, a bf16 scale s and minimum m and w = q * s + m, q in [0, 15]
Scales are rounded up (and minimums down) to bf16 before the weights are rounded, so no weight is clipped:
the error per weight is at most s / 2. A model loaded in any of these formats keeps TimeMix's LoRA matrices in
bf16 (`loading.LORA_NAMES`) and its vectors and embedding in float32.

`PackedLinear.forward` takes the compiled GEMV for small batches of rows (decode: M = batch size), and for
prefill (M large, compute-bound) runs torch's GEMM in the compute dtype (bf16 on CPUs with native bf16 that
measure it faster, else float32; see `cpu_features`) over the weight dequantised a block of rows at a time
into a scratch that stays in cache. `GemvLinear` is the float32 `nn.Linear` of a CPU model loaded without
compression: same parameters, but its few-row inference takes the compiled GEMV too, which reads the weight
~1.7x faster than torch's at M = 1 (the head alone is ~40% of the bytes of a 0.1B decode step).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError
from . import cpu_kernels

log = logging.getLogger(__name__)

FORMATS = {"bf16": cpu_kernels.BF16, "int8": cpu_kernels.INT8, "q4": cpu_kernels.Q4}
GROUP = {"int8": 64, "q4": 32}
# Up to this many rows (tokens x batch) the GEMV, which reads the packed weight once for all rows, beats
# dequantising and a GEMM (bench/bench_gemv.py prints the crossover on this machine).
GEMV_MAX_ROWS = 16
# Rows of a matrix quantised at once: bounds the float32 temporaries when loading a 7B head.
QUANTIZE_ROWS = 4096
# Prefill dequantises a packed weight block by block into a scratch of about this many bytes (cache-sized), but
# at least PREFILL_MIN_ROWS rows: narrower blocks make torch's GEMM per block slower (bench/bench_gemv.py).
PREFILL_TILE_BYTES, PREFILL_MIN_ROWS = 1 << 20, 256
_EMPTY = torch.empty(0, dtype=torch.bfloat16)


def check_format(fmt: str | None) -> str | None:
    """The format name, or a ParameterError listing the supported ones."""
    if fmt is not None and fmt not in FORMATS:
        raise ParameterError(f"unknown quantize format {fmt!r}; expected None or one of {sorted(FORMATS)}")
    return fmt


def packable(fmt: str, in_features: int) -> bool:
    """Whether a matrix with this many input features can be stored in `fmt` (whole groups per row)."""
    return in_features % 32 == 0 and in_features % GROUP.get(fmt, 1) == 0


def packed_nbytes(fmt: str, out_features: int, in_features: int) -> int:
    """Bytes of a [out, in] matrix stored in `fmt` (weights + scales + minimums)."""
    n = out_features * in_features
    if fmt == "bf16":
        return 2 * n
    if fmt == "int8":
        return n + 2 * (n // GROUP["int8"])
    return n // 2 + 4 * (n // GROUP["q4"])


def _bf16_toward(t: torch.Tensor, up: bool) -> torch.Tensor:
    """t rounded to bfloat16, toward +inf (up) or -inf, so the rounded value bounds t."""
    b = t.to(torch.bfloat16)
    off = (b.float() < t) if up else (b.float() > t)
    return torch.where(off, torch.nextafter(b, torch.full_like(b, float("inf") if up else float("-inf"))), b)


def pack(weight: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(packed weight, scales, minimums) of a [N, K] matrix; unused parts are empty tensors."""
    empty = torch.empty(0, dtype=torch.bfloat16)
    if fmt == "bf16":
        return weight.to(torch.bfloat16).contiguous(), empty, empty
    parts = [_quantize_rows(weight[i : i + QUANTIZE_ROWS].float(), fmt) for i in range(0, weight.shape[0], QUANTIZE_ROWS)]
    return tuple(torch.cat(p) for p in zip(*parts))  # type: ignore[return-value]


def _quantize_rows(w: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    N, K = w.shape
    g = w.view(N, K // GROUP[fmt], GROUP[fmt])
    if fmt == "int8":
        scale = _bf16_toward(g.abs().amax(-1) / 127, up=True)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round(g / scale.float()[..., None]).clamp_(-127, 127).to(torch.int8)
        return q.view(N, K), scale, torch.empty(0, dtype=torch.bfloat16)
    low = _bf16_toward(g.amin(-1), up=False)
    scale = _bf16_toward((g.amax(-1) - low.float()) / 15, up=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round((g - low.float()[..., None]) / scale.float()[..., None]).clamp_(0, 15).to(torch.uint8)
    packed = q[..., :16] | (q[..., 16:] << 4)
    return packed.reshape(N, K // 2), scale, low


def dequantize_reference(
    weight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, fmt: str, in_features: int
) -> torch.Tensor:
    """The dense float32 matrix in plain torch (the fallback without compiled kernels, and their oracle)."""
    if fmt == "bf16":
        return weight.float()
    N, K = weight.shape[0], in_features
    if fmt == "int8":
        return (weight.view(N, K // 64, 64).float() * scales.float()[..., None]).view(N, K)
    packed = weight.view(N, K // 32, 16)
    q = torch.cat((packed & 15, packed >> 4), dim=-1).float()
    return (q * scales.float()[..., None] + mins.float()[..., None]).view(N, K)


def kernels_apply(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `x @ weight.T` may go to the compiled kernels: on CPU, built, and no autograd graph to feed."""
    return (
        x.device.type == "cpu"
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and cpu_kernels.available()
    )


def gemv(
    x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, code: int,
    kernel: cpu_kernels.Kernel | None,
) -> torch.Tensor:
    """x [..., K] @ W^T through the GEMV `kernel`, in x's shape and dtype (float32 accumulation)."""
    K = x.shape[-1]
    y = cpu_kernels.gemv(x.reshape(-1, K).float(), weight, scales, mins, code, kernel)
    return y.view(*x.shape[:-1], y.shape[-1]).to(x.dtype)


def gemv_operands(layer: nn.Module) -> tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None:
    """(format code, (weight, scales, minimums)) of a layer the compiled GEMV runs on CPU: a `PackedLinear`, or
    a bias-free contiguous float32 `nn.Linear` whose rows split into 64s; None for any other layer."""
    w = getattr(layer, "weight", None)
    if w is None or w.device.type != "cpu":
        return None
    if isinstance(layer, PackedLinear):
        return FORMATS[layer.fmt], (w, layer.scales, layer.minimums)
    if (isinstance(layer, nn.Linear) and layer.bias is None and w.dtype == torch.float32 and w.is_contiguous()
            and layer.in_features % 64 == 0):
        return cpu_kernels.F32, (w, _EMPTY, _EMPTY)
    return None


def prefill_block_rows(in_features: int, dtype: torch.dtype) -> int:
    return max(PREFILL_MIN_ROWS, PREFILL_TILE_BYTES // (in_features * dtype.itemsize))


class GemvLinear(nn.Linear):
    """`nn.Linear` whose inference on a few float32 rows on CPU runs its GEMV `kernel`, and on many rows its
    measured `gemm` (same parameters and state_dict; training is `nn.Linear`'s own forward)."""

    kernel: cpu_kernels.Kernel | None = None  # measured by kernel_choice.prepare; None: the unmeasured default
    gemm: str = cpu_kernels.TORCH  # the GEMM of many rows (prefill), also measured by kernel_choice.prepare

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if self.bias is None and x.dtype == w.dtype == torch.float32 and w.is_contiguous() and kernels_apply(x, w):
            if x.numel() <= GEMV_MAX_ROWS * self.in_features:
                return gemv(x, w, _EMPTY, _EMPTY, cpu_kernels.F32, self.kernel)
            if self.gemm != cpu_kernels.TORCH:
                y = cpu_kernels.gemm(x.reshape(-1, self.in_features), w, self.gemm)
                return y.view(*x.shape[:-1], self.out_features)
        return super().forward(x)


class PackedLinear(nn.Module):
    """A bias-free Linear whose weight is stored in one of `FORMATS`; `layer(x)` works like `nn.Linear`.

    The packed tensors are buffers (`weight`, `scales`, `minimums`), so `.to()`, `state_dict()` and the
    cache fingerprint see them. Inference only: no gradients flow to the weight.
    """

    kernel: cpu_kernels.Kernel | None = None  # measured by kernel_choice.prepare; None: the unmeasured default

    def __init__(
        self, in_features: int, out_features: int, fmt: str, compute_dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        if not packable(fmt, in_features):
            raise ParameterError(f"{fmt} needs in_features divisible by {max(32, GROUP.get(fmt, 1))}, got {in_features}")
        self.in_features, self.out_features, self.fmt = in_features, out_features, fmt
        self.compute_dtype = compute_dtype
        self.register_buffer("weight", torch.empty(0), persistent=True)
        self.register_buffer("scales", torch.empty(0, dtype=torch.bfloat16), persistent=True)
        self.register_buffer("minimums", torch.empty(0, dtype=torch.bfloat16), persistent=True)

    @classmethod
    def from_dense(cls, weight: torch.Tensor, fmt: str, compute_dtype: torch.dtype = torch.float32) -> PackedLinear:
        layer = cls(weight.shape[1], weight.shape[0], fmt, compute_dtype)
        layer.weight, layer.scales, layer.minimums = pack(weight, fmt)
        return layer

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fmt={self.fmt}, compute={self.compute_dtype}"

    @property
    def _isa(self) -> str | None:
        return self.kernel.isa if self.kernel else None

    def dense(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight as a dense [out, in] matrix in `dtype` (a fresh tensor, except bf16 storage read as bf16)."""
        if self.fmt == "bf16" and dtype == torch.bfloat16:
            return self.weight
        if self.weight.device.type == "cpu" and cpu_kernels.available() and dtype in (torch.float32, torch.bfloat16):
            return cpu_kernels.dequantize(
                self.weight, self.scales, self.minimums, FORMATS[self.fmt], self.in_features, dtype, self._isa
            )
        return dequantize_reference(self.weight, self.scales, self.minimums, self.fmt, self.in_features).to(dtype)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Output rows `ids` of the weight, dense in the compute dtype (packed rows are stored one after another)."""
        pick = (t[ids] if t.numel() else t for t in (self.weight, self.scales, self.minimums))
        return dequantize_reference(*pick, self.fmt, self.in_features).to(self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = (self.weight, self.scales, self.minimums, FORMATS[self.fmt])
        if not kernels_apply(x, self.weight):
            return F.linear(x.to(self.compute_dtype), self.dense(self.compute_dtype)).to(x.dtype)
        if x.numel() <= GEMV_MAX_ROWS * self.in_features:
            return gemv(x, *packed, self.kernel)
        if self.fmt == "bf16" and self.compute_dtype == torch.bfloat16:  # the stored weight is the GEMM operand
            return F.linear(x.to(torch.bfloat16), self.weight).to(x.dtype)
        rows = x.reshape(-1, self.in_features).to(self.compute_dtype)
        y = cpu_kernels.linear(rows, *packed, prefill_block_rows(self.in_features, self.compute_dtype), self._isa)
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)

