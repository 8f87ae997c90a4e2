"""Replicas on Ray Serve, one run on a local cluster: what scale-out costs and buys on this machine.

1. Replicas vs threads: 1 replica with 2 threads vs 2 replicas with 1 thread each (Ray's default routing),
   `--checks` self-checks of the served prompt (pre-warmed on every replica) at `--concurrency` through the
   `openai` client: checks/s, p50 / p99 latency. `--rounds` alternates the two layouts.
2. Affinity vs Ray's default routing, 2 replicas x 1 thread, prompts under 4 policies that the replicas do not
   pre-warm (NeMo's reference policy and three rewordings): each layout freshly deployed (cold caches), then
   two passes of `--checks` (cold, then steady). Policy-prefix tokens reused = sum over checks of
   min(cached tokens, the policy prefix's tokens) / sum of the prefix tokens; checks/s. Once with the default
   cache (room for every prefix on every replica) and once under cache pressure (`--pressure-snapshots`: room
   for a few snapshots, as when a replica's share of the prefixes outgrows its cache).
3. The kill drill of tests/test_ray_serve.py with each routing: SIGKILL one replica's process during a load
   run: requests sent, retried by the client, failed, seconds until a new replica answers, and whether it
   started warm from the shared cache_dir.

Usage: python bench/bench_replicas.py [--checks 200] [--concurrency 32] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the load and kill drivers the tests use

import torch
from machine import load_average, machine_lines
from ray import serve
from ray_support import POLICIES, Check, free_port, kill_drill, replicas, run_checks, self_check_prompts
from rwkv7_provider.model.tokenizer import load_tokenizer

from rwkv7_provider.guard.prompts import SELF_CHECK_INPUT
from rwkv7_provider.runtime.registry import get_engine, resolve_model_path
from rwkv7_provider.runtime.templates import render
from rwkv7_provider.server.config import build_config, default_model
from rwkv7_provider.server.ray_app import APP_NAME, build_app, local_cluster

log = logging.getLogger("bench_replicas")


def deploy(url: str, replica_count: int, threads: int, routing: str, *, cache_dir: str | None = None,
           cache_bytes: int | None = None) -> None:
    """A fresh application (the previous one and its replicas removed first)."""
    serve.delete(APP_NAME)
    model = default_model()
    if cache_bytes is not None:
        model = model.model_copy(update={"settings": model.settings.model_copy(update={"cache_bytes": cache_bytes})})
    serve.run(build_app(build_config([model]), replicas=replica_count, threads=threads, routing=routing,
                        cache_dir=cache_dir), name=APP_NAME, route_prefix="/")
    replicas(url, replica_count, timeout=120)


def summary(checks: list[Check], seconds: float) -> dict:
    ok = [c for c in checks if c.error is None]
    lat = sorted(c.seconds * 1000 for c in ok)
    return {"rate": len(ok) / seconds, "p50": statistics.median(lat), "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "failed": len(checks) - len(ok), "replicas": len({c.replica for c in ok})}


def timed(url: str, prompts: list[str], concurrency: int) -> tuple[list[Check], float]:
    t0 = time.perf_counter()
    checks = asyncio.run(run_checks(url, prompts, concurrency))
    return checks, time.perf_counter() - t0


def snapshot_bytes() -> int:
    """Bytes of one prefix snapshot of the embedded guard (what a cache budget counts)."""
    expected = get_engine("default", threads=1).cache.expected
    return sum(math.prod(shape) * torch.empty((), dtype=dtype).element_size() for shape, dtype in expected.values())


def policy_prefix_tokens() -> list[int]:
    """Tokens each policy's prompts share before the user's message (what a replica can cache)."""
    tok = load_tokenizer(None, model_path=resolve_model_path("default"))
    out = []
    for policy in POLICIES:
        a, b = tok.encode(render(policy, user_input="apple")), tok.encode(render(policy, user_input="zebra"))
        out.append(next(i for i, (x, y) in enumerate(zip(a, b)) if x != y))
    return out


def replicas_vs_threads(url: str, args: argparse.Namespace) -> None:
    prompts = [p for _, p in self_check_prompts(args.checks, policies=(SELF_CHECK_INPUT,))]
    results: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for count, threads in ((1, 2), (2, 1)):
            deploy(url, count, threads, "default")
            timed(url, prompts[:16], 8)  # warm the connection pool and each replica's first batches
            checks, seconds = timed(url, prompts, args.concurrency)
            results.setdefault(f"{count} x {threads}", []).append(summary(checks, seconds))
            log.info("round %d, %d replica(s) x %d thread(s): %.1f checks/s", r + 1, count, threads,
                     results[f"{count} x {threads}"][-1]["rate"])
    print(f"\n1. replicas x threads, {args.checks} self-checks at {args.concurrency} concurrent (openai client, "
          f"Ray's default routing), medians of {args.rounds} round(s)")
    print(f"{'layout':<10} {'checks/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7} {'replicas used':>14}")
    for layout, runs in results.items():
        med = {k: statistics.median(run[k] for run in runs) for k in ("rate", "p50", "p99")}
        print(f"{layout:<10} {med['rate']:>9.1f} {med['p50']:>8.0f} {med['p99']:>8.0f} "
              f"{sum(r['failed'] for r in runs):>7} {max(r['replicas'] for r in runs):>14}")
    base = statistics.median(r["rate"] for r in results["1 x 2"])
    print(f"2 x 1 / 1 x 2 checks/s: {statistics.median(r['rate'] for r in results['2 x 1']) / base:.2f}x")


def affinity_vs_default(url: str, args: argparse.Namespace) -> None:
    prefix = policy_prefix_tokens()
    print(f"\n2. routing, 2 replicas x 1 thread, 4 policies (prefixes of {prefix} tokens), {args.checks} "
          f"self-checks per pass at {args.concurrency} concurrent, fresh replicas per routing and cache size")
    print(f"{'routing':<9} {'cache':<14} {'pass':<6} {'prefix reuse':>13} {'tokens computed':>16} {'checks/s':>9} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'failed':>7}")
    budgets = {"default": None}
    if args.pressure_snapshots:
        budgets[f"{args.pressure_snapshots} snapshots"] = args.pressure_snapshots * snapshot_bytes()
    for cache, cache_bytes in budgets.items():
        for routing in ("affinity", "default"):
            deploy(url, 2, 1, routing, cache_bytes=cache_bytes)
            for name, seed in (("cold", 1), ("steady", 2)):
                workload = self_check_prompts(args.checks, seed=seed)
                checks, seconds = timed(url, [p for _, p in workload], args.concurrency)
                s = summary(checks, seconds)
                ok = [(k, c) for (k, _), c in zip(workload, checks) if c.error is None]
                reused = sum(min(c.cached_tokens, prefix[k]) for k, c in ok)
                computed = sum(c.prompt_tokens - c.cached_tokens for _, c in ok)
                print(f"{routing:<9} {cache:<14} {name:<6} {reused / sum(prefix[k] for k, _ in ok):>12.1%} "
                      f"{computed:>16} {s['rate']:>9.1f} {s['p50']:>7.0f} {s['p99']:>7.0f} {s['failed']:>7}")


def kill(url: str, args: argparse.Namespace) -> None:
    print(f"\n3. kill drill, 2 replicas x 1 thread, {args.kill_checks} self-checks at 8 concurrent, one replica's process "
          "SIGKILLed after a fifth of them, the replicas sharing a cache_dir")
    for routing in ("default", "affinity"):
        with tempfile.TemporaryDirectory() as cache_dir:  # shared by the replicas: the replacement starts warm
            deploy(url, 2, 1, routing, cache_dir=cache_dir)
            prompts = [p for _, p in self_check_prompts(args.kill_checks, seed=3)]
            drill = kill_drill(url, prompts, concurrency=8, kill_after=args.kill_checks // 5)
        start = drill.replacement_info["cache_at_start"]["default"]
        print(f"{routing:<9} {len(prompts)} sent, {drill.retried} retried by the client, {drill.failed} failed; "
              f"replacement answering {drill.recovered_s:.1f} s after the kill (its own load "
              f"{drill.replacement_info['load_seconds']:.1f} s; cache at start: {start['snapshots']} snapshot(s), "
              f"{start['tokens_computed']} tokens computed)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checks", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=1, help="rounds of part 1 (the layouts alternate)")
    p.add_argument("--kill-checks", type=int, default=100)
    p.add_argument("--pressure-snapshots", type=int, default=6, help="also compare routings with each replica's "
                   "cache holding this many guard snapshots (0: skip)")
    p.add_argument("--only", choices=["threads", "routing", "kill"], help="run one part")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    print("\n".join(machine_lines(None)) + f"; load average before: {load_average()}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with local_cluster("127.0.0.1", port, num_cpus=os.cpu_count(), log_to_driver=False):
        for part, run in (("threads", replicas_vs_threads), ("routing", affinity_vs_default), ("kill", kill)):
            if args.only in (None, part):
                run(url, args)
    print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
