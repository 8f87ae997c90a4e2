"""CPU serving benchmark: warm self-checks per second, one caller against N concurrent ones, in one run.

Models: the 0.1B World shape with random weights (fp32, World tokenizer) and the embedded guard
(`model: default`). Each engine pre-warms NeMo Guardrails' reference `self_check_input` template, as the
provider does, and answers `score(prompt, ["Yes", "No"])` for prompts filled with seeded 5-60 word messages
(bench_cache.py's), a new message for every check. Each round runs the same number of checks four ways, one
after the other, so background load hits them alike:

  direct     a plain synchronous loop of `Engine.score` in this thread: the fastest way one caller can run
             the checks, and the baseline of the ratios (the engine runs every call on its scheduler's
             thread, so this thread only tokenises and waits)
  1 thread   the same loop in one client thread
  N threads  N client threads in a closed loop (each sends its next check when the last is answered)
  N async    N asyncio tasks awaiting `Engine.ascore` in a closed loop (how NeMo Guardrails and the HTTP
             server call the engine)

The table gives the medians over rounds, each mode's ratio to `direct`, latency percentiles and the mean rows
per prefill forward. Afterwards the last round's concurrent checks are scored again one by one on a second
engine over the same weights (its own cache, so no state is shared): the largest difference of a choice's
log-probability is printed (aim: within 1e-4). Last, the model's forward alone for N rows of a warm check's
mean new tokens, as one call against one call per row: what batching can save before the head and the
per-check work (for a model whose prefill is bound by its GEMMs this caps the N async ratio).

`--long-prompts` adds peak RSS for one 1k / 10k / 100k-token prompt through the guard's engine, each in a
fresh process (what the prefill in bounded pieces keeps flat).

Usage: python bench/bench_serving.py [--threads 2] [--clients 16] [--checks 96] [--rounds 3] [--long-prompts]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
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
from machine import load_average, machine_lines
from rwkv7_provider.model.threads import off_thread
from rwkv7_provider.model.tokenizer import load_tokenizer

from rwkv7_provider.runtime.engine import Engine
from rwkv7_provider.runtime.registry import get_engine
from rwkv7_provider.runtime.results import ScoreResult

log = logging.getLogger("bench_serving")
CHOICES = ["Yes", "No"]
CONCURRENCY_AIM = 2.0  # issue 21: N concurrent warm checks / a direct synchronous loop


def build(name: str, threads: int) -> Engine:
    if name == "guard":
        base = get_engine("default", threads=threads)  # the registry would set its own default otherwise
        engine = Engine(base.model, base.tokenizer, name="guard")
    else:
        engine = Engine(random_model(0), load_tokenizer("world"), name="0.1b")
    engine.prewarm_templates([SELF_CHECK_INPUT])
    return engine


def closed_loop(check: Callable[[str], object], prompts: list[str], clients: int) -> tuple[float, list[float]]:
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


def direct_loop(check: Callable[[str], object], prompts: list[str]) -> tuple[float, list[float]]:
    """(checks per second, latencies) of a plain loop in the calling thread."""
    latencies = []
    t0 = time.perf_counter()
    for prompt in prompts:
        t = time.perf_counter()
        check(prompt)
        latencies.append(time.perf_counter() - t)
    return len(prompts) / (time.perf_counter() - t0), latencies


async def async_loop(engine: Engine, prompts: list[str], clients: int) -> tuple[float, list[float], list[ScoreResult]]:
    """(checks per second, latencies, results in prompt order) with `clients` asyncio tasks in a closed loop."""
    latencies: list[float] = []
    results: list[ScoreResult | None] = [None] * len(prompts)
    todo = iter(enumerate(prompts))

    async def client() -> None:
        for i, prompt in todo:
            t0 = time.perf_counter()
            results[i] = await engine.ascore(prompt, CHOICES)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return len(prompts) / (time.perf_counter() - t0), latencies, results


def forward_ceiling(engine: Engine, clients: int, tokens: int, rounds: int = 4) -> float:
    """What batching can save in the model alone: `clients` rows of `tokens` random ids as one forward against
    one forward per row (best of `rounds`, interleaved). Batched checks cannot beat this ratio by much: the
    head and the per-check work around the forward are the only other things a batch shares."""
    model = engine.model
    ids = torch.randint(1, model.config.vocab_size, (clients, tokens), generator=torch.Generator().manual_seed(0))
    lengths = torch.full((clients,), tokens - 1)
    best = {1: math.inf, clients: math.inf}
    with torch.inference_mode():
        for _ in range(rounds):
            for per in best:
                t0 = time.perf_counter()
                for start in range(0, clients, per):
                    rows = slice(start, start + per)
                    model.forward_hidden(ids[rows], model.zero_state(per), lengths[rows])
                best[per] = min(best[per], time.perf_counter() - t0)
    return best[1] / best[clients]


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1e3


def largest_difference(engine: Engine, prompts: list[str], results: list[ScoreResult]) -> float:
    """Largest |log-probability difference| between `results` and the same checks run one by one on a second
    engine over the same weights (its own state cache)."""
    serial = Engine(engine.model, engine.tokenizer, name="serial")
    serial.prewarm_templates([SELF_CHECK_INPUT])
    return max(
        abs(serial.score(prompt, CHOICES).logprobs[choice] - got.logprobs[choice])
        for prompt, got in zip(prompts, results, strict=True)
        for choice in CHOICES
    )


def bench_model(name: str, args: argparse.Namespace) -> dict:
    engine = build(name, args.threads)
    c = args.clients
    modes = ("direct", "1 thread", f"{c} threads", f"{c} async")
    texts = messages(2 * c + len(modes) * args.checks * args.rounds, 1)  # every check a new message
    prompts = iter(SELF_CHECK_INPUT.replace("{{ user_input }}", m) for m in texts)

    def check(prompt: str) -> ScoreResult:
        return engine.score(prompt, CHOICES)

    def take(n: int) -> list[str]:
        return [next(prompts) for _ in range(n)]

    closed_loop(check, take(c), c)  # warm-up: first-call costs out of the timings
    asyncio.run(async_loop(engine, take(c), c))
    rates: dict[str, list[float]] = {m: [] for m in modes}
    latencies: dict[str, list[float]] = {m: [] for m in modes}
    stats = engine.scheduler.stats
    forwards = rows = 0  # of the async phases only
    for r in range(args.rounds):
        for mode in modes:
            batch = take(args.checks)
            before = (stats.forwards, stats.forward_rows)
            if mode == "direct":
                rate, lat = direct_loop(check, batch)
            elif mode.endswith("async"):
                rate, lat, results = asyncio.run(async_loop(engine, batch, c))
                last = (batch, results)
                forwards, rows = forwards + stats.forwards - before[0], rows + stats.forward_rows - before[1]
            else:
                rate, lat = closed_loop(check, batch, 1 if mode == "1 thread" else c)
            rates[mode].append(rate)
            latencies[mode] += lat
            log.info("%s round %d: %s %.1f checks/s", name, r + 1, mode, rate)
    computed = [res.prompt_tokens - res.cached_tokens for res in last[1]]  # a warm check's new tokens
    tokens = max(2, round(statistics.mean(computed)))
    return {
        "model": name,
        "ceiling": off_thread(forward_ceiling, engine, c, tokens),  # the main thread keeps no OpenMP pool
        "modes": modes,
        "rates": {m: statistics.median(v) for m, v in rates.items()},
        "p50": {m: pct(v, 0.5) for m, v in latencies.items()},
        "p99": {m: pct(v, 0.99) for m, v in latencies.items()},
        "mean_rows": rows / max(1, forwards),
        "max_diff": largest_difference(engine, *last),
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
    log.info("%d torch threads; %d checks x %d rounds per mode", args.threads, args.checks, args.rounds)
    load_before = load_average()
    rows = [bench_model(name, args) for name in args.models]
    print(f"\nwarm self-checks (score Yes/No), medians of {args.rounds} rounds of {args.checks} checks per mode; "
          f"load average {load_before} before, {load_average()} after")
    print("\n".join(machine_lines(args.threads)))
    for r in rows:
        direct = r["rates"]["direct"]
        print(f"\n{r['model']}: {'mode':<11} {'checks/s':>9} {'/ direct':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for mode in r["modes"]:
            rate = r["rates"][mode]
            print(f"{'':<{len(r['model'])}}  {mode:<11} {rate:>9.1f} {rate / direct:>8.2f}x {r['p50'][mode]:>8.1f} "
                  f"{r['p99'][mode]:>8.1f}")
        many = r["rates"][r["modes"][-1]] / direct
        print(f"  {r['modes'][-1]}: {r['mean_rows']:.1f} rows per prefill forward; aim {r['modes'][-1]} / direct "
              f">= {CONCURRENCY_AIM}x: {'reached' if many >= CONCURRENCY_AIM else 'NOT reached'} ({many:.2f}x); "
              f"largest log-probability difference vs one by one: {r['max_diff']:.1e} (aim <= 1e-4)")
        print(f"  the model's forward alone, {args.clients} rows in one call / one call per row: {r['ceiling']:.2f}x "
              "(what batching saves before the head and per-check work)")
    if args.long_prompts:
        long_prompts(args.threads)
    log.info("peak RSS of this process: %.0f MB", peak_rss_mb())


if __name__ == "__main__":
    main()
