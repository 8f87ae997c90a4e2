"""Matrix kernels on this CPU: torch's fp32 / bf16 GEMM, our GEMV (every instruction set, row-stream count and
prefetch distance), and the blocked prefill path, by rows M.

First the machine (CPU model, SIMD flags, threads, load average). Then the GEMV variants at M = 1: for the
0.1B head (65536 x 768) and the 0.1B and 1.5B FFN matrices, in f32 and int8, every kernel
`kernel_choice` can choose (instruction set / row streams, +pf: software prefetch distance) and torch, in
GB/s of weights read, best of --repeats rounds that each run every variant once (cold: cycling through
copies of the matrix that together exceed the last-level cache, as a decode step does). This is the table
that says whether AVX-512 or AVX2 is faster here, and why (streams, prefetch). Then four tables, each for
the 0.1B (768 x 3072) and 1.5B (2048 x 8192) FFN matrix, best of --repeats (this machine is shared: the
minimum is the least disturbed run):
  torch GEMM   fp32 vs bf16 at M = 1 and M = 1024 (GFLOP/s): what `cpu_features.gemm_dtype` chooses between
  GEMV         M = 1, torch fp32 vs our kernel per format (ms and GB/s of weights read), cycling through copies
               of the matrix that together exceed the last-level cache, as a decode step does
  prefill      M = 128 and 1024, the fp32 model's GEMM vs a packed layer's: blocked (`cpu_kernels.linear`, a
               cache-sized block of rows dequantised at a time) in fp32 and bf16, and the whole matrix
               dequantised to a fresh float32 tensor, cast, then one GEMM (what PackedLinear did before), ms
  crossover    per format, our GEMV vs the blocked fp32 path for M = 1 .. 64: where `quantize.GEMV_MAX_ROWS`
               should sit
Usage: python bench/bench_gemv.py [--threads 2] [--variants-only]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from machine import load_average, machine_lines
from rwkv7_provider.model import cpu_kernels
from rwkv7_provider.model.cpu_kernels import STREAMS, TORCH, Kernel
from rwkv7_provider.model.quantize import FORMATS, PackedLinear, pack, prefill_block_rows

SHAPES = {"0.1B ffn": (3072, 768), "1.5B ffn": (8192, 2048)}
VARIANT_SHAPES = {"0.1B head": (65536, 768), "0.1B ffn": (3072, 768), "1.5B ffn": (8192, 2048)}
PREFETCH = (0, 256, 1024)
COLD_BYTES = 256 << 20  # more than any last-level cache here
EMPTY = torch.empty(0, dtype=torch.bfloat16)


def best(fn, repeats: int) -> float:
    fn()
    out = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def cold(fn, layers: list, repeats: int) -> float:
    """Seconds per call of fn(layer), each round calling it once on every copy (none is in cache)."""
    return best(lambda: [fn(layer) for layer in layers], repeats) / len(layers)


def variants() -> list[Kernel]:
    out = [Kernel(TORCH)]
    for isa in cpu_kernels.status().isas:
        if isa == "portable":
            out.append(Kernel(isa))
        else:
            out += [Kernel(isa, s, pf) for s in STREAMS for pf in PREFETCH]
    return out


def variant_table(repeats: int) -> None:
    """GB/s of every GEMV variant at M = 1, cold, per shape and format; interleaved rounds, best of each."""
    kernels = variants()
    columns, results = [], {}
    g = torch.Generator().manual_seed(0)
    for name, (N, K) in VARIANT_SHAPES.items():
        w = torch.randn(N, K, generator=g) / K**0.5
        x = torch.randn(1, K, generator=g)
        for fmt in ("f32", "int8"):
            packed = (w, EMPTY, EMPTY) if fmt == "f32" else pack(w, fmt)
            nbytes = sum(t.nbytes for t in packed)
            copies = [tuple(t.clone() for t in packed) for _ in range(max(1, COLD_BYTES // nbytes))]
            code = cpu_kernels.F32 if fmt == "f32" else FORMATS[fmt]
            column = f"{name} {fmt}"
            columns.append(column)
            best_s = {k: float("inf") for k in kernels if not (k.isa == TORCH and fmt != "f32")}
            for _ in range(repeats):
                for k in best_s:
                    t0 = time.perf_counter()
                    for c in copies:
                        cpu_kernels.gemv(x, *c, code, k)
                    best_s[k] = min(best_s[k], (time.perf_counter() - t0) / len(copies))
            for k, t in best_s.items():
                results[str(k), column] = nbytes / t / 1e9
            del copies
    print("\nGEMV variants at M = 1, GB/s of weights read (cold; higher is faster; * the best of a column)")
    print(f"  {'kernel':<18}" + "".join(f"{c:>18}" for c in columns))
    best_of = {c: max(v for (k, col), v in results.items() if col == c) for c in columns}
    for k in kernels:
        row = f"  {str(k):<18}"
        for c in columns:
            v = results.get((str(k), c))
            row += f"{'':>18}" if v is None else f"{v:>17.1f}{'*' if v == best_of[c] else ' '}"
        print(row)


def blocked(x: torch.Tensor, layer: PackedLinear, dtype: torch.dtype) -> torch.Tensor:
    packed = (layer.weight, layer.scales, layer.minimums, FORMATS[layer.fmt])
    return cpu_kernels.linear(x.to(dtype), *packed, prefill_block_rows(layer.in_features, dtype))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--variants-only", action="store_true", help="only the GEMV variant table")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    status = cpu_kernels.status()
    if not status.ok:
        raise SystemExit(f"the CPU kernels are unavailable: {status.why}")
    print("\n".join(machine_lines(args.threads)) + f"; load average {load_average()}")
    with torch.inference_mode():
        variant_table(args.repeats)
    if args.variants_only:
        return
    torch.manual_seed(0)
    with torch.inference_mode():
        for name, (N, K) in SHAPES.items():
            w = torch.randn(N, K) / K**0.5
            print(f"\n{name} [{N} x {K}]")
            for M in (1, 1024):
                x = torch.randn(M, K)
                fp32 = best(lambda x=x, w=w: F.linear(x, w), max(2, args.repeats // (1 + M // 64)))
                wb, xb = w.bfloat16(), x.bfloat16()
                bf16 = best(lambda xb=xb, wb=wb: F.linear(xb, wb), max(2, args.repeats // (1 + M // 64)))
                flop = 2 * M * N * K
                print(f"  torch GEMM M={M:<5} fp32 {flop / fp32 / 1e9:7.1f} GFLOP/s  bf16 {flop / bf16 / 1e9:7.1f} GFLOP/s"
                      f"  (bf16 {fp32 / bf16:.2f}x)")
            copies = [w.clone() for _ in range(max(1, COLD_BYTES // w.nbytes))]
            x = torch.randn(1, K)
            t = cold(lambda w, x=x: F.linear(x, w), copies, args.repeats)
            line = f"  GEMV M=1: torch fp32 {1e3 * t:.3f} ms ({w.nbytes / t / 1e9:.1f} GB/s)"
            t = cold(lambda w, x=x: cpu_kernels.gemv(x, w, EMPTY, EMPTY, cpu_kernels.F32), copies, args.repeats)
            line += f" | ours f32 {1e3 * t:.3f} ms ({w.nbytes / t / 1e9:.1f} GB/s)"
            del copies
            layers = {fmt: PackedLinear.from_dense(w, fmt) for fmt in FORMATS}
            for fmt, layer in layers.items():
                nbytes = sum(b.numel() * b.element_size() for b in layer.buffers())
                packed = [PackedLinear.from_dense(w, fmt) for _ in range(max(1, COLD_BYTES // nbytes))]
                t = cold(lambda layer, x=x: layer(x), packed, args.repeats)
                line += f" | {fmt} {1e3 * t:.3f} ms ({nbytes / t / 1e9:.1f} GB/s)"
            print(line)
            for M in (128, 1024):
                x = torch.randn(M, K)
                reps = max(2, args.repeats // (1 + M // 64))
                line = f"  prefill M={M:<5} torch fp32 {1e3 * best(lambda x=x, w=w: F.linear(x, w), reps):.1f} ms |"
                for fmt, layer in layers.items():
                    parts = []
                    for dtype in (torch.float32, torch.bfloat16):
                        t_blocked = best(lambda x=x, layer=layer, dtype=dtype: blocked(x, layer, dtype), reps)
                        t_whole = best(lambda x=x, layer=layer, dtype=dtype: F.linear(x.to(dtype), layer.dense().to(dtype)), reps)
                        parts.append(f"{str(dtype)[6:]} {1e3 * t_blocked:.1f} / {1e3 * t_whole:.1f}")
                    line += f" {fmt} (blocked / whole) " + ", ".join(parts) + " |"
                print(line)
            for fmt, layer in layers.items():
                row = f"  {fmt:<5} M:"
                for M in (1, 4, 16, 32, 64):
                    x = torch.randn(M, K)
                    gemv = best(lambda x=x, layer=layer, code=FORMATS[fmt]: cpu_kernels.gemv(
                        x, layer.weight, layer.scales, layer.minimums, code), args.repeats)
                    dense = best(lambda x=x, layer=layer: blocked(x, layer, torch.float32), args.repeats)
                    row += f"  {M}: gemv {1e3 * gemv:.2f} / blocked {1e3 * dense:.2f} ms"
                print(row)


if __name__ == "__main__":
    main()
