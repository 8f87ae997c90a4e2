"""CPU benchmark: our RWKV-7 vs the `rwkv` package (BlinkDL's inference code), measured in one run.

Builds a random model of the 0.1B World shape (L12, C768, V65536, LoRA ranks 64/64/32/128), then runs
each implementation in its own subprocess (so peak RSS is per implementation) with the same threads:
prefill tokens/s at T = 128 and 1024 (median of --repeats), decode tokens/s over --decode-steps, peak RSS.
Prints a table with the ratios ours / rwkv, then the GEMM bound of prefill: the tokens/s that the model's fp32
matrix products alone allow (timed in the same subprocess) and the share of it that ours reaches.
--profile adds torch.profiler's top operators for one of our prefills at the longest T.
Usage: python bench/bench_cpu.py [--threads 2] [--profile]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

log = logging.getLogger("bench_cpu")

SHAPE = {"n_layer": 12, "n_embd": 768, "vocab_size": 65536, "head_size": 64, "dim_w": 64, "dim_a": 64, "dim_v": 32, "dim_g": 128}


def build_checkpoint(path: Path) -> None:
    """Random weights of the 0.1B shape, written as a BlinkDL .pth (what both sides can load)."""
    from rwkv7_provider.model import RWKV7Config

    from rwkv7_provider.testing import random_state_dict

    torch.save(random_state_dict(RWKV7Config(**SHAPE), seed=0), path)


def timed(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_seconds(T: int, repeats: int) -> float:
    """Time of the model's fp32 matrix products alone for a T-token prefill: per layer r, k, v, output, the FFN
    and the LoRAs (no value LoRA in layer 0). Prefill can approach but not beat this."""
    from rwkv7_provider.model import RWKV7Config

    config = RWKV7Config(**SHAPE)
    C = config.n_embd
    shapes = [(C, C)] * 4 + [(C, config.ffn_dim), (config.ffn_dim, C)]
    for rank in (config.dim_w, config.dim_a, config.dim_g, config.dim_v):  # value LoRA last
        shapes += [(C, rank), (rank, C)]
    mats = [(torch.randn(T, n_in), torch.randn(n_out, n_in)) for n_in, n_out in shapes]

    def products():
        for layer in range(config.n_layer):
            for x, w in mats[: -2 if layer == 0 else None]:
                torch.nn.functional.linear(x, w)

    return timed(products, repeats)


def profile_prefill(model, ids: torch.Tensor, rows: int = 15) -> str:
    """torch.profiler's operators by self CPU time for one prefill (after the timed runs, so warm)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(ids, last_only=True)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def run_ours(path: Path, lengths: list[int], steps: int, repeats: int, profile: bool = False) -> dict:
    from rwkv7_provider.model import RWKV7

    model = RWKV7.from_pretrained(path)
    ids = torch.randint(1, SHAPE["vocab_size"], (max(lengths),), generator=torch.Generator().manual_seed(0))
    out = {}
    with torch.inference_mode():
        for T in lengths:
            out[f"prefill_{T}"] = T / timed(lambda T=T: model(ids[:T].view(1, -1), last_only=True), repeats)
        if profile:
            out["profile"] = profile_prefill(model, ids.view(1, -1))

        def decode():
            state = None
            for t in ids[:steps].tolist():
                _, state = model(torch.tensor([[t]]), state)

        out["decode"] = steps / timed(decode, 1)
    return out


def run_rwkv(path: Path, lengths: list[int], steps: int, repeats: int, profile: bool = False) -> dict:
    os.environ["RWKV_V7_ON"], os.environ["RWKV_CUDA_ON"] = "1", "0"
    from rwkv.model import RWKV

    model = RWKV(model=str(path.with_suffix("")), strategy="cpu fp32")
    ids = torch.randint(1, SHAPE["vocab_size"], (max(lengths),), generator=torch.Generator().manual_seed(0)).tolist()
    out = {}
    with torch.inference_mode():
        for T in lengths:
            out[f"prefill_{T}"] = T / timed(lambda T=T: model.forward(ids[:T], None), repeats)

        def decode():
            state = None
            for t in ids[:steps]:
                _, state = model.forward([t], state)

        out["decode"] = steps / timed(decode, 1)
    return out


def run_gemm(path: Path, lengths: list[int], steps: int, repeats: int, profile: bool = False) -> dict:
    """The GEMM bound in a subprocess of its own, so that its buffers count in nobody's peak RSS."""
    return {f"gemm_bound_{T}": T / gemm_seconds(T, repeats) for T in lengths}


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    fn = {"ours": run_ours, "rwkv": run_rwkv, "gemm": run_gemm}[args.worker]
    result = fn(Path(args.checkpoint), args.lengths, args.decode_steps, args.repeats, args.profile)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lengths", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--decode-steps", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top operators of our prefill")
    p.add_argument("--worker", choices=["ours", "rwkv", "gemm"], help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rwkv7-0.1b-random.pth"
        log.info("building a random 0.1B-shape checkpoint ...")
        build_checkpoint(path)
        results = {}
        for name in ("rwkv", "ours", "gemm"):
            log.info("running %s (threads=%d) ...", name, args.threads)
            cmd = [sys.executable, __file__, "--worker", name, "--checkpoint", str(path), "--threads", str(args.threads),
                   "--decode-steps", str(args.decode_steps), "--repeats", str(args.repeats), "--lengths", *map(str, args.lengths)]
            cmd += ["--profile"] if args.profile and name == "ours" else []
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = [f"prefill_{T}" for T in args.lengths] + ["decode", "peak_rss_mb"]
    log.info("\n%-14s %12s %12s %8s", "metric", "rwkv pkg", "ours", "ratio")
    for row in rows:
        a, b = results["rwkv"][row], results["ours"][row]
        unit = "MB" if row == "peak_rss_mb" else "tok/s"
        log.info("%-14s %9.1f %s %9.1f %s %7.2fx", row, a, unit[:2], b, unit[:2], b / a)
    for T in args.lengths:
        bound = results["gemm"][f"gemm_bound_{T}"]
        log.info("GEMM bound at T=%d: %.0f tok/s (fp32 matrix products alone); ours reaches %.0f%% of it",
                 T, bound, 100 * results["ours"][f"prefill_{T}"] / bound)
    if args.profile:
        log.info("\nour prefill at T=%d, operators by self CPU time:\n%s", max(args.lengths), results["ours"]["profile"])


if __name__ == "__main__":
    main()
