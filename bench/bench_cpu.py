"""CPU benchmark: our RWKV-7 vs the `rwkv` package (BlinkDL's inference code), measured in one run.

Builds a random model of the 0.1B World shape (L12, C768, V65536, LoRA ranks 64/64/32/128) or, with
--shape 1.5b, of the 1.5B shape (L24, C2048, ranks 96/96/64/256; a 3 GB bf16 file in a temp dir), then runs
each implementation in its own subprocess (so peak RSS is per implementation) with the same threads: the
`rwkv` package in fp32, ours in fp32 and in each --formats weight format (`quantize=`). Rows: prefill
tokens/s at each T (median of --repeats), decode tokens/s (median of --repeats runs of --decode-steps tokens;
ours through `decode_step` + head, the engine's hot path), peak RSS and our memory estimate. Prints the
table with ratios against the `rwkv` package, then the decode aims. Usage: python bench/bench_cpu.py
[--threads 2] [--shape 0.1b|1.5b] [--formats int8 q4]
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

SHAPES = {
    "0.1b": {"n_layer": 12, "n_embd": 768, "vocab_size": 65536, "head_size": 64, "dim_w": 64, "dim_a": 64, "dim_v": 32, "dim_g": 128},
    "1.5b": {"n_layer": 24, "n_embd": 2048, "vocab_size": 65536, "head_size": 64, "dim_w": 96, "dim_a": 96, "dim_v": 64, "dim_g": 256},
}
VOCAB = 65536
# decode aims of issue 14: our decode / the rwkv package's fp32 decode
AIMS = {("0.1b", "fp32"): 0.95, ("0.1b", "best"): 1.5, ("1.5b", "fp32"): 0.95, ("1.5b", "best"): 3.0}


def build_checkpoint(path: Path, shape: str) -> None:
    """Random weights, written as a BlinkDL .pth (what both sides can load); bf16 like released checkpoints."""
    from rwkv7_provider.model import RWKV7Config

    from rwkv7_provider.testing import random_state_dict

    sd = random_state_dict(RWKV7Config(**SHAPES[shape]), seed=0)
    torch.save({k: v.to(torch.bfloat16) for k, v in sd.items()}, path)


def timed(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_ours(path: Path, lengths: list[int], steps: int, repeats: int, quantize: str | None = None) -> dict:
    from rwkv7_provider.model import RWKV7, estimate_memory

    model = RWKV7.from_pretrained(path, quantize=quantize)
    ids = torch.randint(1, VOCAB, (max(lengths + [steps]),), generator=torch.Generator().manual_seed(0))
    out = {"estimate_mb": estimate_memory(path, quantize=quantize).weights_bytes / 2**20}
    with torch.inference_mode():
        for T in lengths:
            out[f"prefill_{T}"] = T / timed(lambda T=T: model(ids[:T].view(1, -1), last_only=True), repeats)

        def decode():
            state = model.zero_state(1)
            for t in ids[:steps]:
                model.head(model.decode_step(t.view(1), state))

        out["decode"] = steps / timed(decode, repeats)
    return out


def run_rwkv(path: Path, lengths: list[int], steps: int, repeats: int) -> dict:
    os.environ["RWKV_V7_ON"], os.environ["RWKV_CUDA_ON"] = "1", "0"
    from rwkv.model import RWKV

    model = RWKV(model=str(path.with_suffix("")), strategy="cpu fp32")
    ids = torch.randint(1, VOCAB, (max(lengths + [steps]),), generator=torch.Generator().manual_seed(0)).tolist()
    out = {}
    with torch.inference_mode():
        for T in lengths:
            out[f"prefill_{T}"] = T / timed(lambda T=T: model.forward(ids[:T], None), repeats)

        def decode():
            state = None
            for t in ids[:steps]:
                _, state = model.forward([t], state)

        out["decode"] = steps / timed(decode, repeats)
    return out


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
    torch.set_num_threads(args.threads)
    run = (Path(args.checkpoint), args.lengths, args.decode_steps, args.repeats)
    if args.worker == "rwkv":
        result = run_rwkv(*run)
    else:
        result = run_ours(*run, quantize=None if args.worker == "fp32" else args.worker)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shape", choices=sorted(SHAPES), default="0.1b")
    p.add_argument("--formats", nargs="*", default=["bf16", "int8", "q4"], help="quantize formats besides fp32")
    p.add_argument("--lengths", type=int, nargs="+", help="prefill lengths (default 128 1024; 1.5b: 128)")
    p.add_argument("--decode-steps", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.lengths = args.lengths or ([128, 1024] if args.shape == "0.1b" else [128])
    if args.worker:
        return worker(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = ["rwkv", "fp32", *args.formats]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"rwkv7-{args.shape}-random.pth"
        log.info("building a random %s-shape checkpoint ...", args.shape)
        build_checkpoint(path, args.shape)
        results = {}
        for name in names:
            log.info("running %s (threads=%d) ...", name, args.threads)
            cmd = [sys.executable, __file__, "--worker", name, "--checkpoint", str(path), "--threads", str(args.threads),
                   "--decode-steps", str(args.decode_steps), "--repeats", str(args.repeats), "--lengths", *map(str, args.lengths)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = [f"prefill_{T}" for T in args.lengths] + ["decode", "peak_rss_mb", "estimate_mb"]
    header = f"{'metric':<14}{'rwkv pkg':>10}" + "".join(f"{'ours ' + n:>12}{'ratio':>7}" for n in names[1:])
    lines = [f"{args.shape} shape, {args.threads} threads (tok/s; MB)", header]
    for row in rows:
        base = results["rwkv"].get(row)
        line = f"{row:<14}{base if base is not None else float('nan'):>10.1f}"
        for n in names[1:]:
            value = results[n][row]
            line += f"{value:>12.1f}" + (f"{value / base:>6.2f}x" if base else f"{'':>7}")
        lines.append(line)
    best = max(names[1:], key=lambda n: results[n]["decode"])
    for kind, name in (("fp32", "fp32"), ("best", best)):
        ratio = results[name]["decode"] / results["rwkv"]["decode"]
        aim = AIMS[(args.shape, kind)]
        lines.append(f"aim: decode {name} / rwkv fp32 = {ratio:.2f}x (aim >= {aim}x): {'reached' if ratio >= aim else 'NOT reached'}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
