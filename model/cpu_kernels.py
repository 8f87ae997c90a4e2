"""The CPU kernels of `csrc/`, built once per machine, and the choice of which code runs each op.

Why a small C++ library: decoding reads every weight once per token, so only a matrix-vector kernel that
reads fewer bytes per weight makes it faster, and none of the maintained options does that on CPU here:
torch's `_weight_int8pack_mm` / `_weight_int4pack_mm_for_cpu` are 4-14x slower than the fp32 GEMV at M = 1,
bitsandbytes' CPU GEMV is 4-bit only, needs AVX512-BF16 and downloads its fast kernel from a model hub, the
torchao wheel ships no x86 CPU kernels, and ONNX Runtime / llama.cpp run whole graphs, not one torch layer.
The kernels: a GEMV over f32 / bf16 / int8 / q4 weights with f32 activations, its blocked form for prefill
GEMMs of compressed weights, and the fused per-token ops of a decode step (two ops instead of ~30 per layer
besides the GEMVs, and one op that runs every layer of a step). Each exists for portable C++, AVX2 and AVX-512 (`csrc/isa_*.cpp`).

Which code runs an op is a `Kernel`: plain torch (float32 GEMVs only) or one instruction set of the library,
with a number of row streams for the GEMV. The fastest differs between CPUs (on one Intel Xeon the AVX-512
path decoded slower than AVX2 and than plain torch), so `kernel_choice.prepare(model)`, run when a CPU model
is loaded, measures the candidates for the model's shapes and gives each layer its `kernel`. Unmeasured:
the widest instruction set the CPU has, and plain torch for float32 where there is only portable C++ (non-x86).

The build (`kernel_build`): once per compiler and torch version into a private, verified cache
(`RWKV7_KERNEL_DIR` or ~/.cache/rwkv7_provider/kernels); `rwkv7-provider build-kernels` does it ahead.
Without a compiler `available()` is False, one warning says why, and callers use plain torch: same results,
slower. `RWKV7_CPU_KERNELS=0` disables the kernels; `RWKV7_CPU_ISA=avx512|avx2|portable` forces one
instruction set for every op, unmeasured (the tests run every path on one machine).
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ParameterError
from ..kernels import register_cpu
from .kernel_build import KernelBuildError, LibrarySpec, Unit, ensure_built

log = logging.getLogger(__name__)

# Weight formats and instruction sets: the codes of csrc/kernels.h. INT8_A16 runs INT8 weights with each
# activation row rounded to int16 per 64-group and summed in integers (a `Kernel` with `a16`; see kernels.h).
F32, BF16, INT8, Q4, INT8_A16 = 0, 1, 2, 3, 4
ISA_CODES = {"portable": 0, "avx2": 1, "avx512": 2}
TORCH = "torch"
ONEDNN = "onednn"  # many-row float32 products (prefill) through torch's oneDNN instead of its default (MKL on x86)
STREAMS = (1, 2, 4, 8)  # the GEMV's row streams at M = 1 (csrc/simd.h rows_streams)
DEFAULT_STREAMS = 4

CSRC = Path(__file__).with_name("csrc")
X86 = platform.machine().lower() in ("x86_64", "amd64")
# The -m flags of each instruction set's file; csrc/isa_*.cpp assert them and ops.cpp checks each at run time.
ISA_FLAGS = {
    "avx2": ("-mavx2", "-mfma"),
    "avx512": ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"),
}


@dataclass(frozen=True)
class Kernel:
    """How one op runs: `isa` is TORCH (plain torch) or an instruction set of the library; `streams` is the
    GEMV's number of row streams at M = 1 and `prefetch` how far ahead (bytes) each is software-prefetched;
    `serial` runs the op in the calling thread instead of on torch's threads; `a16` (int8 weights only) rounds
    the activations to int16 and sums the products in integers (INT8_A16): on a CPU where widening each int8
    code to float bounds the GEMV, this takes fewer instructions per weight, at a rounding error ~1e-5 of
    each 64 activations' largest, far below int8's own."""

    isa: str
    streams: int = DEFAULT_STREAMS
    prefetch: int = 0
    serial: bool = False
    a16: bool = False

    def __str__(self) -> str:
        if self.isa == TORCH:
            return self.isa
        return (f"{self.isa}/{self.streams}" + ("+a16" if self.a16 else "")
                + (f"+pf{self.prefetch}" if self.prefetch else "") + ("+serial" if self.serial else ""))

    def format_code(self, fmt: int) -> int:
        """The `fmt` argument of the GEMV ops for weights stored in `fmt` under this kernel."""
        if not self.a16:
            return fmt
        if fmt != INT8:
            raise ParameterError("int16 activations (a16) run int8 weights only")
        return INT8_A16


def openmp_flags() -> tuple[str, ...]:
    """-fopenmp where torch's own threads are OpenMP's (the Linux wheels). Without it `at::parallel_for` compiles
    to a plain loop, and the kernels ran on one thread whatever `torch.set_num_threads` said. The library then
    shares torch's OpenMP runtime (the same libgomp.so.1, already loaded) and so its thread count."""
    parallel = torch.__config__.parallel_info()
    return ("-fopenmp",) if sys.platform == "linux" and "parallel backend: OpenMP" in parallel else ()


def library_spec() -> LibrarySpec:
    """The library: ops.cpp and the portable kernels everywhere, the AVX2 / AVX-512 files on x86-64."""
    torch_dir = Path(torch.__file__).parent
    openmp = openmp_flags()
    units = [Unit(CSRC / "ops.cpp", (*openmp, *(("-DRWKV7_X86_KERNELS",) if X86 else ()))),
             Unit(CSRC / "isa_portable.cpp")]
    if X86:
        units += [Unit(CSRC / f"isa_{name}.cpp", flags) for name, flags in ISA_FLAGS.items()]
    return LibrarySpec(
        name="rwkv7_cpu",
        units=tuple(units),
        headers=(CSRC / "kernels.h", CSRC / "simd.h"),
        cflags=("-O3", "-std=c++17", "-fPIC", f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}"),
        include_dirs=(torch_dir / "include", torch_dir / "include" / "torch" / "csrc" / "api" / "include"),
        lib_dirs=(torch_dir / "lib",),
        libs=("c10", "torch_cpu", "torch"),
        ldflags=openmp,
        identity=(f"torch {torch.__version__} {torch.version.git_version}", f"machine {platform.machine()}"),
    )


@dataclass(frozen=True)
class Status:
    """What loading the library found: `isas` the instruction sets this CPU runs, or `why` it is unavailable."""

    ok: bool
    why: str = ""
    path: Path | None = None
    isas: tuple[str, ...] = ()
    built: bool = False


_lock = threading.Lock()
_status: Status | None = None


def _load() -> Status:
    if os.environ.get("RWKV7_CPU_KERNELS", "1") == "0":
        return Status(False, "disabled by RWKV7_CPU_KERNELS=0")
    try:
        path, built = ensure_built(library_spec())
        torch.ops.load_library(str(path))
    except (KernelBuildError, OSError, RuntimeError) as e:
        return Status(False, f"{type(e).__name__}: {str(e).strip()[-500:]}")
    codes = set(torch.ops.rwkv7_cpu.supported_isas())
    isas = tuple(name for name, code in ISA_CODES.items() if code in codes)
    return Status(True, path=path, isas=isas, built=built)


def status() -> Status:
    """Loads (building if needed) the library on the first call; later calls return the same answer."""
    global _status
    with _lock:
        if _status is None:
            _status = _load()
            if not _status.ok and "RWKV7_CPU_KERNELS=0" not in _status.why:
                log.warning(
                    "CPU kernels unavailable (%s); using plain torch: float32 decodes slower, and compressed "
                    "weights are dequantised per call, slower than float32. Install a C++ compiler (g++) to "
                    "enable them.", _status.why,
                )
        return _status


def available() -> bool:
    """True when the compiled kernels are loaded (building them on the first call)."""
    return status().ok


def forced_isa() -> str | None:
    """The instruction set RWKV7_CPU_ISA forces, if it names one this CPU runs."""
    name = os.environ.get("RWKV7_CPU_ISA")
    if not name:
        return None
    if name not in status().isas:
        log.warning("ignoring RWKV7_CPU_ISA=%s: this CPU and build run %s", name, ", ".join(status().isas))
        return None
    return name


def isa() -> str:
    """The instruction set of ops without a measured kernel: forced, else the widest this CPU runs."""
    if not available():
        return "unavailable"
    return forced_isa() or status().isas[-1]


def default_kernel(fmt: int) -> Kernel:
    """The kernel of a layer nobody measured (see the module docstring)."""
    widest = isa()
    if fmt == F32 and widest == "portable" and not forced_isa():
        return Kernel(TORCH)
    return Kernel(widest)


def gemv(
    x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, fmt: int,
    kernel: Kernel | None = None,
) -> torch.Tensor:
    """x [M, K] float32 @ W^T -> [M, N] float32, W stored in format `fmt`, run by `kernel` (default: the
    unmeasured choice)."""
    kernel = kernel or default_kernel(fmt)
    if kernel.isa == TORCH:
        if fmt != F32:
            raise ParameterError("plain torch runs float32 GEMVs only")
        return F.linear(x, weight)
    return torch.ops.rwkv7_cpu.gemv(x, weight, scales, mins, kernel.format_code(fmt), isa=ISA_CODES[kernel.isa],
                                    streams=kernel.streams, prefetch=kernel.prefetch, serial=kernel.serial)


def onednn_available() -> bool:
    """Whether this torch runs oneDNN's linear on a dense float32 weight. The op is private (torch's own compiler
    calls it), so it is looked up, never assumed: without it every product stays on `F.linear`."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def gemm(x: torch.Tensor, weight: torch.Tensor, backend: str = TORCH) -> torch.Tensor:
    """x [M, K] float32 @ W^T -> [M, N] by `backend`: TORCH (`F.linear`: MKL's sgemm in the x86 wheels) or
    ONEDNN. Which is faster depends on the CPU: on one Zen 4, oneDNN took 3-15% less time per row for the 0.1B
    shape's matrices with 1 thread and 4-27% with 2 (MKL's path for that CPU is not its fastest);
    `kernel_choice` measures it."""
    if backend == ONEDNN:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, None, "none", [], "")
    return F.linear(x, weight)


def _isa_code(name: str | None) -> int:
    """An instruction set of the library: `name`, or the unmeasured default where it is None or TORCH."""
    return ISA_CODES[isa() if name in (None, TORCH) else name]


def dequantize(
    weight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, fmt: int, in_features: int,
    dtype: torch.dtype = torch.float32, isa_name: str | None = None,
) -> torch.Tensor:
    """W as a dense [N, K] tensor in `dtype` (float32, or bfloat16 rounded to nearest even like `.to()`)."""
    return torch.ops.rwkv7_cpu.dequantize(weight, scales, mins, fmt, in_features, dtype, isa=_isa_code(isa_name))


def linear(
    x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, fmt: int, block: int,
    isa_name: str | None = None,
) -> torch.Tensor:
    """x [M, K] @ W^T -> [M, N] in x's dtype (float32 / bfloat16), dequantising `block` rows of W at a time."""
    return torch.ops.rwkv7_cpu.linear(x, weight, scales, mins, fmt, block, isa=_isa_code(isa_name))


def shift_mix_(
    x: torch.Tensor, x_prev: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, eps: float, mixes: list[torch.Tensor]
) -> torch.Tensor:
    """LayerNorm of x [B, C] and the token-shift interpolations with each mix vector -> [len(mixes), B, C];
    x_prev becomes the normalised x (in place)."""
    return torch.ops.rwkv7_cpu.shift_mix_(x, x_prev, ln_w, ln_b, eps, mixes)


def time_mix_(
    state: torch.Tensor, mixed: torch.Tensor, r: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    v_first: torch.Tensor | None, weights: dict[str, torch.Tensor | None], eps: float, isa_name: str | None = None,
    serial: bool = False,
) -> torch.Tensor:
    """TimeMix of one decode step after the r / k / v GEMVs (LoRAs, value residual, WKV state update in place,
    GroupNorm, bonus, gate) -> [B, C], the output projection's input. `weights` by name: w0 w1 w2 (decay
    LoRA), a0 a1 a2 (in-context rate), v0 v1 v2 (value residual; None with v_first in layer 0), g1 g2 (gate),
    k_k, k_a, r_k, ln_w, ln_b (ln_x)."""
    return torch.ops.rwkv7_cpu.time_mix_(state, mixed, r, k, v, v_first, **weights, eps=eps, isa=_isa_code(isa_name),
                                         serial=serial)


def shift_mix_seq(
    x: torch.Tensor, x_prev: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, eps: float,
    mixes: list[torch.Tensor], cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`shift_mix_` for whole sequences: x [n, C] the tokens of x_prev's rows one after another (`cu_seqlens`
    for rows of different lengths) -> ([len(mixes), n, C], each row's last normalised token [rows, C], the new
    x_prev); x_prev is only read."""
    return torch.ops.rwkv7_cpu.shift_mix_seq(x, x_prev, ln_w, ln_b, eps, mixes, cu_seqlens)


def time_mix_seq(
    state: torch.Tensor, mixed: torch.Tensor, r: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    v_first: torch.Tensor | None, weights: dict[str, torch.Tensor | None], eps: float,
    cu_seqlens: torch.Tensor | None = None, isa_name: str | None = None, serial: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`time_mix_` for whole sequences (tokens laid out as in `shift_mix_seq`), the LoRAs as GEMMs over all
    tokens -> (y [n, C], the state after each row [rows, H, N, N]); `state` is only read."""
    return torch.ops.rwkv7_cpu.time_mix_seq(state, mixed, r, k, v, v_first, **weights, eps=eps, cu_seqlens=cu_seqlens,
                                            isa=_isa_code(isa_name), serial=serial)


def decode_layers_(
    x: torch.Tensor, att_x_prev: torch.Tensor, wkv: torch.Tensor, ffn_x_prev: torch.Tensor, weights: list[torch.Tensor],
    plan: list[int], eps: list[float], isa_name: str | None = None, serial: bool = False,
) -> torch.Tensor:
    """Every layer of one decode step for x [B, C] (after ln0) -> [B, C] (before ln_out), the state [L, B, ...]
    updated in place: per layer shift_mix_, the r / k / v GEMVs, time_mix_, the output GEMV and the FFN, without
    returning to Python in between. `weights`, `plan` and `eps` as `cpu_decode.layer_operands` builds them."""
    return torch.ops.rwkv7_cpu.decode_layers_(x, att_x_prev, wkv, ffn_x_prev, weights, plan, eps,
                                              isa=_isa_code(isa_name), serial=serial)


def wkv7(
    r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
    state: torch.Tensor | None = None, cu_seqlens: torch.Tensor | None = None, isa_name: str | None = None,
    serial: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """WKV-7 token by token in C++ (`kernels.wkv7`'s "cpu" implementation, with its semantics: inputs
    [B, T, H, N] or packed rows [1, total, H, N] with `cu_seqlens`, w the log decay, state [rows, H, N, N] float32
    or None for zeros, never modified) -> (y float32, new state). Inference only (no autograd)."""
    _, _, H, N = r.shape
    rows = r.shape[0] if cu_seqlens is None else len(cu_seqlens) - 1
    if state is None:
        state = r.new_zeros(rows, H, N, N, dtype=torch.float32)
    inputs = (t.float().contiguous() for t in (r, w, k, v, a, b))
    return torch.ops.rwkv7_cpu.wkv7(*inputs, state.float().contiguous(), cu_seqlens, isa=_isa_code(isa_name),
                                    serial=serial)


register_cpu(lambda: wkv7 if available() else None)  # `kernels.wkv7` runs it for CPU inference
