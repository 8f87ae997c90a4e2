"""CPU serving benchmark: warm self-checks per second with 1 and N concurrent clients, in one run.

Models: the 0.1B World shape with random weights (fp32, World tokenizer) and the embedded guard
(`model: default`). Each engine pre-warms NeMo Guardrails' reference `self_check_input` template, as the
provider does, and answers `score(prompt, ["Yes", "No"])` for prompts filled with seeded 5-60 word messages
(bench_cache.py's). A round runs the same number of checks twice: one client at a time (the serial
baseline), then N client threads in a closed loop (each sends its next check when the last is answered),
so background load hits both alike; the table gives the medians over rounds, the ratio, and the latency
percentiles of single checks.

`--long-prompts` adds peak RSS for one 1k / 10k / 100k-token prompt through the guard's engine, each in a
fresh process (what the prefill in bounded pieces keeps flat).

Usage: python bench/bench_serving.py [--threads 2] [--clients 16] [--checks 96] [--rounds 3] [--long-prompts]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_cache import SELF_CHECK_INPUT, messages, random_model
from rwkv7_provider.model.tokenizer import load_tokenizer

from rwkv7_provider.runtime.engine import Engine
from rwkv7_provider.runtime.registry import get_engine

log = logging.getLogger("bench_serving")
CHOICES = ["Yes", "No"]


def build(name: str, threads: int) -> Engine:
    if name == "guard":
        base = get_engine("default", threads=threads)  # the registry would set its own default otherwise
        engine = Engine(base.model, base.tokenizer, name="guard")
    else:
        engine = Engine(random_model(0), load_tokenizer("world"), name="0.1b")
    engine.prewarm_templates([SELF_CHECK_INPUT])
    return engine


def closed_loop(check: Callable[[str], None], prompts: list[str], clients: int) -> tuple[float, list[float]]:
    """(checks per second, per-check latencies) with `clients` threads taking prompts from one list."""
    latencies: list[float] = []
    lock = threading.Lock()
    todo = iter(prompts)

    def client() -> None:
        while True:
            with lock:
                prompt = next(todo, None)
            if prompt is None:
                return
            t0 = time.perf_counter()
            check(prompt)
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(prompts) / (time.perf_counter() - t0), latencies


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1e3


def bench_model(name: str, args: argparse.Namespace) -> dict:
    engine = build(name, args.threads)
    warmup = 2 * args.clients
    texts = messages(warmup + 2 * args.checks * args.rounds, 1)  # every check a new message: no end-of-prompt hits
    prompts = iter(SELF_CHECK_INPUT.replace("{{ user_input }}", m) for m in texts)

    def check(prompt: str) -> None:
        engine.score(prompt, CHOICES)

    def take(n: int) -> list[str]:
        return [next(prompts) for _ in range(n)]

    closed_loop(check, take(warmup), args.clients)  # warm-up: first-call costs out of the timings
    rates: dict[int, list[float]] = {1: [], args.clients: []}
    latencies: dict[int, list[float]] = {1: [], args.clients: []}
    stats = engine.scheduler.stats
    forwards = rows = 0  # of the concurrent phases only
    for r in range(args.rounds):
        for clients in (1, args.clients):
            before = (stats.forwards, stats.forward_rows)
            rate, lat = closed_loop(check, take(args.checks), clients)
            if clients > 1:
                forwards, rows = forwards + stats.forwards - before[0], rows + stats.forward_rows - before[1]
            rates[clients].append(rate)
            latencies[clients] += lat
            log.info("%s round %d: %d client(s) %.1f checks/s", name, r + 1, clients, rate)
    return {
        "model": name,
        "rates": {c: statistics.median(v) for c, v in rates.items()},
        "p50": {c: pct(v, 0.5) for c, v in latencies.items()},
        "p99": {c: pct(v, 0.99) for c, v in latencies.items()},
        "mean_rows": rows / max(1, forwards),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set. VmHWM, not ru_maxrss: that one keeps the parent's peak across fork
    and exec, so a subprocess of a big process would report the parent's size."""
    status = Path("/proc/self/status")
    if status.is_file():
        return next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM:")) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_worker(args: argparse.Namespace) -> None:
    """One prompt of `--rss-worker` tokens through a fresh engine; prints its peak RSS as JSON."""
    torch.set_num_threads(args.threads)
    base = get_engine(args.model, threads=args.threads)
    engine = Engine(base.model, base.tokenizer, cache_bytes=0, max_prompt_tokens=None,
                    prefill_tokens=args.prefill_tokens)
    ids = torch.randint(1, engine.vocab_size, (args.rss_worker,), generator=torch.Generator().manual_seed(0))
    engine.score(ids[:64].tolist(), CHOICES)  # everything but the long prompt is allocated before the baseline
    before = peak_rss_mb()
    t0 = time.perf_counter()
    engine.score(ids.tolist(), CHOICES)
    seconds = time.perf_counter() - t0
    print(json.dumps({"peak_mb": peak_rss_mb(), "growth_mb": peak_rss_mb() - before, "seconds": seconds}))


def long_prompt(tokens: int, threads: int, model: str = "default", prefill_tokens: int | None = None) -> dict:
    """`rss_worker` in a fresh process."""
    cmd = [sys.executable, __file__, "--rss-worker", str(tokens), "--threads", str(threads), "--model", model]
    if prefill_tokens:
        cmd += ["--prefill-tokens", str(prefill_tokens)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def long_prompts(threads: int) -> None:
    print("\nlong prompts through the guard's engine (fresh process each; growth over a 64-token check)")
    print(f"{'tokens':>8} {'peak RSS MB':>12} {'growth MB':>10} {'seconds':>8}")
    for n in (1_000, 10_000, 100_000):
        r = long_prompt(n, threads)
        print(f"{n:>8} {r['peak_mb']:>12.0f} {r['growth_mb']:>10.1f} {r['seconds']:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (besides the serial one)")
    parser.add_argument("--checks", type=int, default=96, help="checks per client count and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["0.1b", "guard"], choices=["0.1b", "guard"])
    parser.add_argument("--long-prompts", action="store_true", help="also peak RSS for 1k/10k/100k tokens")
    parser.add_argument("--rss-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--prefill-tokens", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_worker:
        return rss_worker(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    log.info("%d torch threads; %d checks x %d rounds per client count", args.threads, args.checks, args.rounds)
    rows = [bench_model(name, args) for name in args.models]
    c = args.clients
    print(f"\nwarm self-checks (score Yes/No), {args.threads} torch threads, medians of {args.rounds} rounds")
    print(f"{'model':<7} {'1 client/s':>11} {f'{c} clients/s':>13} {'ratio':>7} {'p50 1':>8} {'p99 1':>8} "
          f"{f'p50 {c}':>8} {f'p99 {c}':>8} {f'rows/fwd {c}':>12}")
    for r in rows:
        one, many = r["rates"][1], r["rates"][c]
        print(f"{r['model']:<7} {one:>11.1f} {many:>13.1f} {many / one:>6.2f}x {r['p50'][1]:>7.1f}ms "
              f"{r['p99'][1]:>7.1f}ms {r['p50'][c]:>7.1f}ms {r['p99'][c]:>7.1f}ms {r['mean_rows']:>12.1f}")
    if args.long_prompts:
        long_prompts(args.threads)
    log.info("peak RSS of this process: %.0f MB", peak_rss_mb())


if __name__ == "__main__":
    main()
