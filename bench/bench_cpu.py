"""CPU benchmark: our RWKV-7 vs the `rwkv` package (BlinkDL's inference code), measured in one run.

Builds a random model of the 0.1B World shape (L12, C768, V65536, LoRA ranks 64/64/32/128) or, with
--shape 1.5b, of the 1.5B shape (L24, C2048, ranks 96/96/64/256; a 3 GB bf16 file in a temp dir), then runs
each implementation in its own worker process (so peak RSS is per implementation) with the same threads: the
`rwkv` package in fp32, ours in fp32 and in each --formats weight format (`quantize=`). The workers stay up and
take turns, one timed call each per round (after a warm-up), so a change in the machine's load hits every
implementation alike (the machine is shared); --sequential runs one worker at a time instead, for shapes whose
models do not fit in memory together. Rows: prefill tokens/s at each T and decode tokens/s (--decode-steps
tokens from a fresh state; ours through `decode_step` + head, the engine's hot path, and through
`forward(ids [1, 1], state)`, the model-class call; for int8 also `decode_a16_off`: the same step with the float
GEMV where int16 activations were measured faster, so their gain shows in the same run), medians of --repeats
rounds; peak RSS and our memory estimate. A further worker times the model's fp32 matrix products alone for
each T, each shape on the faster of torch's and oneDNN's GEMM as ours: the GEMM bound of prefill (prefill can
approach but not beat it). Prints the machine (CPU model, SIMD flags, threads, load average), each of our
workers' kernel choice (measured at load, see model/kernel_choice.py), the table with ratios
against the `rwkv` package, then the prefill and decode aims; --profile adds torch.profiler's top operators
for one of our fp32 prefills at the longest T; --llama-cpp DIR adds llama.cpp's llama-bench on the same model in f32
and q8_0, interleaved with the others (see llamacpp_peer.py), and our decode and prefill as ratios to it.
Usage: python bench/bench_cpu.py [--threads 2] [--shape 0.1b|1.5b] [--formats int8 q4] [--profile] [--llama-cpp DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import llamacpp_peer
import torch
from machine import load_average, machine_lines

log = logging.getLogger("bench_cpu")

SHAPES = {
    "0.1b": {"n_layer": 12, "n_embd": 768, "vocab_size": 65536, "head_size": 64, "dim_w": 64, "dim_a": 64, "dim_v": 32, "dim_g": 128},
    "1.5b": {"n_layer": 24, "n_embd": 2048, "vocab_size": 65536, "head_size": 64, "dim_w": 96, "dim_a": 96, "dim_v": 64, "dim_g": 256},
}
VOCAB = 65536
# prefill lengths the workers can run (the `rwkv` package needs T >= 2 for its sequence path)
PREFILL_MAX = 4096
PREFILL_AIM = 2.0  # 0.1B shape, fp32, T = 1024: ours / the rwkv package
DECODE_AIMS = {"fp32": 1.0, "int8": 2.0}  # issue 21: our decode / the rwkv package's fp32 decode


def build_checkpoint(path: Path, shape: str) -> None:
    """Random weights, written as a BlinkDL .pth (what both sides can load); bf16 like released checkpoints."""
    from rwkv7_provider.model import RWKV7Config

    from rwkv7_provider.testing import random_state_dict

    sd = random_state_dict(RWKV7Config(**SHAPES[shape]), seed=0)
    torch.save({k: v.to(torch.bfloat16) for k, v in sd.items()}, path)


def load_ours(path: Path, steps: int, quantize: str | None) -> tuple[Callable, dict[str, Callable], dict]:
    """(prefill(T), {decode metric: decode()}, extra results) for our model."""
    from rwkv7_provider.model import RWKV7, cpu_decode, estimate_memory, kernel_choice

    model = RWKV7.from_pretrained(path, quantize=quantize)  # builds and measures the kernels: see its log line
    ids = torch.randint(1, VOCAB, (max(PREFILL_MAX, steps),), generator=torch.Generator().manual_seed(0))

    def decode_step():  # the engine's hot path: state updated in place
        state = model.zero_state(1)
        for t in ids[:steps]:
            model.head(model.decode_step(t.view(1), state))

    def decode_forward():  # the model-class call: a new state per token
        state = None
        for t in ids[:steps]:
            _, state = model(t.view(1, 1), state)

    def prefill(T: int):
        return model(ids[:T].view(1, -1), last_only=True)

    a16 = [m for m in model.modules() if getattr(m, "kernel", None) is not None and m.kernel.a16]

    def decode_a16_off():  # decode_step with the float GEMV where int16 activations were chosen: their gain
        for m in a16:
            m.kernel = replace(m.kernel, a16=False)
        cpu_decode.invalidate()
        try:
            decode_step()
        finally:
            for m in a16:
                m.kernel = replace(m.kernel, a16=True)
            cpu_decode.invalidate()

    extra = {"estimate_mb": estimate_memory(path, quantize=quantize).weights_bytes / 2**20,
             "kernels": kernel_choice.last_report()}
    decoders = {"decode": decode_step, "decode_forward": decode_forward, "decode_a16_off": decode_a16_off}
    return prefill, decoders, extra


def load_gemm(shape: str) -> tuple[Callable, dict]:
    """(prefill(T) doing only the model's fp32 matrix products for T tokens, the backend of each shape): per layer
    r, k, v, output, the FFN and the LoRAs (no value LoRA in layer 0). The big matrices take the faster of
    torch's and oneDNN's GEMM at 256 rows, as our model's do (`kernel_choice`); the LoRAs torch's, as ours."""
    from rwkv7_provider.model import RWKV7Config, cpu_kernels

    config = RWKV7Config(**SHAPES[shape])
    C = config.n_embd
    shapes = [(C, C)] * 4 + [(C, config.ffn_dim), (config.ffn_dim, C)]
    for rank in (config.dim_w, config.dim_a, config.dim_g, config.dim_v):  # value LoRA last
        shapes += [(C, rank), (rank, C)]
    weights = [torch.randn(n_out, n_in) for n_in, n_out in shapes]
    x = {n_in: torch.randn(PREFILL_MAX, n_in) for n_in, _ in shapes}
    backends = {}
    for w in weights[:6]:
        key = tuple(w.shape)
        if key not in backends:
            times = {}
            for backend in (cpu_kernels.TORCH, cpu_kernels.ONEDNN) if cpu_kernels.onednn_available() else ():
                cpu_kernels.gemm(x[w.shape[1]][:256], w, backend)
                t0 = time.perf_counter()
                for _ in range(3):
                    cpu_kernels.gemm(x[w.shape[1]][:256], w, backend)
                times[backend] = time.perf_counter() - t0
            backends[key] = min(times, key=times.get) if times else cpu_kernels.TORCH
    plan = [(w, backends.get(tuple(w.shape), cpu_kernels.TORCH)) for w in weights]

    def prefill(T: int):
        for layer in range(config.n_layer):
            for w, backend in plan[: -2 if layer == 0 else None]:
                cpu_kernels.gemm(x[w.shape[1]][:T], w, backend)

    return prefill, {"backends": {f"{n}x{k}": b for (n, k), b in backends.items()}}


def profile_prefill(path: Path, T: int, rows: int = 15) -> str:
    """torch.profiler's operators by self CPU time for one of our fp32 prefills (after a warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    prefill, _, _ = load_ours(path, 1, None)
    with torch.inference_mode():
        prefill(T)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            prefill(T)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def load_rwkv(path: Path, steps: int) -> tuple[Callable, dict[str, Callable], dict]:
    os.environ["RWKV_V7_ON"], os.environ["RWKV_CUDA_ON"] = "1", "0"
    from rwkv.model import RWKV

    model = RWKV(model=str(path.with_suffix("")), strategy="cpu fp32")
    ids = torch.randint(1, VOCAB, (max(PREFILL_MAX, steps),), generator=torch.Generator().manual_seed(0)).tolist()

    def decode():
        state = None
        for t in ids[:steps]:
            _, state = model.forward([t], state)

    def prefill(T: int):
        return model.forward(ids[:T], None)

    return prefill, {"decode": decode}, {}


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (reset by exec, unlike ru_maxrss, which a worker inherits from the
    parent that built the checkpoint); ru_maxrss where /proc is missing."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> None:
    """Serve timed calls: each stdin line names a metric, the reply is its seconds; "done" ends with the extras."""
    torch.set_num_threads(args.threads)
    path = Path(args.checkpoint)
    if args.worker == "rwkv":
        prefill, decoders, extra = load_rwkv(path, args.decode_steps)
    elif args.worker == "gemm":
        prefill, extra = load_gemm(args.shape)
        decoders = {}
    else:
        prefill, decoders, extra = load_ours(path, args.decode_steps, None if args.worker == "fp32" else args.worker)
    print(json.dumps({"ready": True}), flush=True)
    with torch.inference_mode():
        for line in sys.stdin:
            metric = line.strip()
            if metric == "done":
                break
            t0 = time.perf_counter()
            decoders[metric]() if metric in decoders else prefill(int(metric.removeprefix("prefill_")))
            print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
    print(json.dumps({**extra, "peak_rss_mb": peak_rss_mb()}), flush=True)


class Worker:
    """One implementation in its own process, answering `time(metric)`."""

    def __init__(self, name: str, args: argparse.Namespace, path: Path) -> None:
        self.name = name
        cmd = [sys.executable, __file__, "--worker", name, "--checkpoint", str(path), "--threads", str(args.threads),
               "--decode-steps", str(args.decode_steps), "--shape", args.shape]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._reply()

    def _reply(self) -> dict:
        while line := self.proc.stdout.readline():
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"worker {self.name} exited with {self.proc.wait()}")

    def time(self, metric: str) -> float:
        self.proc.stdin.write(metric + "\n")
        self.proc.stdin.flush()
        return self._reply()["seconds"]

    def finish(self) -> dict:
        self.proc.stdin.write("done\n")
        self.proc.stdin.flush()
        out = self._reply()
        self.proc.wait()
        return out


def metrics_of(name: str, metrics: list[str]) -> list[str]:
    """The metrics a worker runs: the `rwkv` package and llama-bench have one decode call each; only our int8
    model has int16 activations to turn off."""
    return [m for m in metrics if not (name.startswith(("rwkv", "llama.cpp")) and m == "decode_forward")
            and (m != "decode_a16_off" or name == "int8")]


def measure(workers: list[Worker], metrics: list[str], repeats: int, steps: int, results: dict) -> None:
    """A warm-up call per metric, then `repeats` rounds in which every worker takes each metric in turn."""
    for w in workers:
        for m in metrics_of(w.name, metrics):
            w.time(m)
    seconds = {(w.name, m): [] for w in workers for m in metrics_of(w.name, metrics)}
    for _ in range(repeats):
        for m in metrics:
            for w in workers:
                if (w.name, m) in seconds:
                    seconds[w.name, m].append(w.time(m))
    for w in workers:
        results[w.name] = w.finish()
        for m in metrics_of(w.name, metrics):
            tokens = int(m.removeprefix("prefill_")) if m.startswith("prefill_") else steps
            results[w.name][m] = tokens / statistics.median(seconds[w.name, m])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shape", choices=sorted(SHAPES), default="0.1b")
    p.add_argument("--formats", nargs="*", default=["bf16", "int8", "q4"], help="quantize formats besides fp32")
    p.add_argument("--lengths", type=int, nargs="+", help="prefill lengths (default 128 1024; 1.5b: 128)")
    p.add_argument("--decode-steps", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sequential", action="store_true", help="one worker at a time (models that do not fit together)")
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top operators of our fp32 prefill")
    p.add_argument("--llama-cpp", type=Path, metavar="DIR",
                   help="a llama.cpp source tree: llama-bench on the same model in f32 and q8_0 (see llamacpp_peer.py)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    args.lengths = args.lengths or ([128, 1024] if args.shape == "0.1b" else [128])
    if max(args.lengths) > PREFILL_MAX or min(args.lengths) < 2:
        p.error(f"--lengths must lie in [2, {PREFILL_MAX}]")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)  # the profile runs here
    names = ["rwkv", "fp32", *args.formats]
    metrics = [f"prefill_{T}" for T in args.lengths] + ["decode", "decode_forward"]
    metrics += ["decode_a16_off"] if "int8" in args.formats else []
    results: dict[str, dict] = {}
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"rwkv7-{args.shape}-random.pth"
        log.info("building a random %s-shape checkpoint ...", args.shape)
        build_checkpoint(path, args.shape)
        peers = []
        if args.llama_cpp:
            binary = llamacpp_peer.llama_bench(args.llama_cpp, args.threads)
            files = llamacpp_peer.convert(args.llama_cpp, path, Path(tmp))
            peers = [llamacpp_peer.LlamaBench(binary, f, kind, args.threads, args.decode_steps) for kind, f in files.items()]
            names += [peer.name for peer in peers]
        groups = [[n] for n in names] if args.sequential else [names]
        for group in groups:
            ours = [n for n in group if not n.startswith("llama.cpp")]
            log.info("starting %s (threads=%d) ...", ", ".join(group), args.threads)
            workers = [Worker(n, args, path) for n in ours] + [p for p in peers if p.name in group]
            measure(workers, metrics, args.repeats, args.decode_steps, results)
        log.info("timing the GEMM bound ...")
        prefills = [m for m in metrics if m.startswith("prefill_")]
        measure([Worker("gemm", args, path)], prefills, args.repeats, args.decode_steps, results)
        profile = profile_prefill(path, max(args.lengths)) if args.profile else None
    rows = metrics + ["peak_rss_mb", "estimate_mb"]
    label = {n: n if n.startswith("llama.cpp") else f"ours {n}" for n in names}
    header = f"{'metric':<14}{'rwkv pkg':>10}" + "".join(f"{label[n]:>15}{'ratio':>7}" for n in names[1:])
    mode = "one at a time" if args.sequential else "interleaved"
    title = (f"{args.shape} shape, {args.threads} threads, {mode}, median of {args.repeats} (tok/s; MB); "
             f"load average {load_before} before, {load_average()} after")
    lines = [title, *machine_lines(args.threads)]
    lines += [f"kernels of {label[n]}: {results[n]['kernels']}" for n in names[1:]]
    lines.append(header)
    for row in rows:
        base = results["rwkv"].get("decode" if row.startswith("decode") else row)
        line = f"{row:<14}{base if base is not None else float('nan'):>10.1f}"
        for n in names[1:]:
            value = results[n].get(row, float("nan"))
            if math.isnan(value):  # not measured for this implementation (llama-bench: no RSS, one decode call)
                line += f"{'-':>15}{'':>7}"
            else:
                line += f"{value:>15.1f}" + (f"{value / base:>6.2f}x" if base else f"{'':>7}")
        lines.append(line)
    for T in args.lengths:
        bound = results["gemm"][f"prefill_{T}"]
        backends = ", ".join(f"{shape} {b}" for shape, b in results["gemm"].get("backends", {}).items())
        lines.append(f"GEMM bound at T={T}: {bound:.0f} tok/s (fp32 products alone: {backends}); ours fp32 reaches "
                     f"{100 * results['fp32'][f'prefill_{T}'] / bound:.0f}% of it")
    if args.shape == "0.1b" and 1024 in args.lengths:
        ratio = results["fp32"]["prefill_1024"] / results["rwkv"]["prefill_1024"]
        lines.append(f"aim: prefill T=1024 fp32 / rwkv fp32 = {ratio:.2f}x (aim >= {PREFILL_AIM}x): "
                     f"{'reached' if ratio >= PREFILL_AIM else 'NOT reached'}")
    for name, aim in DECODE_AIMS.items():
        if name in results:
            ratio = results[name]["decode"] / results["rwkv"]["decode"]
            lines.append(f"aim: decode {name} / rwkv fp32 = {ratio:.2f}x (aim >= {aim}x): "
                         f"{'reached' if ratio >= aim else 'NOT reached'}")
    if "decode_a16_off" in results.get("int8", {}):
        lines.append(f"int8 decode with int16 activations where measured faster / without them: "
                     f"{results['int8']['decode'] / results['int8']['decode_a16_off']:.2f}x (same run)")
    for kind, ours in llamacpp_peer.GGUF_TYPES.items():
        peer = f"llama.cpp {kind}"
        if peer in results and ours in results:
            lines.append(f"ours {ours} / {peer}: " + ", ".join(
                f"{m} {results[ours][m] / results[peer][m]:.2f}x" for m in metrics_of(peer, metrics)))
    print("\n".join(lines))
    if profile:
        print(f"\nour fp32 prefill at T={max(args.lengths)}, operators by self CPU time:\n{profile}")


if __name__ == "__main__":
    main()
