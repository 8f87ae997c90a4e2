"""Why the runtime's default CPU thread count is half the usable cores: guard checks with 1, 2 and the default
number of torch threads, on a quiet machine and with every other core kept busy by a spinning process.

Each setting runs in a fresh process (torch's thread pool is process-wide) that loads the embedded guard and
times cold checks (prefix cache off: every check prefills the whole prompt) and warm ones. Prints a table;
the ratios to 1 thread are what matters (the machine is shared and noisy).

    python bench/bench_threads.py [--checks 20]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import subprocess
import sys
import time

log = logging.getLogger("bench_threads")

WORKER = """
import json, sys, time, torch
from rwkv7_provider.guard.prompts import SELF_CHECK_INPUT
from rwkv7_provider.runtime.engine import Engine
from rwkv7_provider.runtime.registry import get_engine, set_threads
from rwkv7_provider.runtime.templates import render
threads, checks = json.loads(sys.argv[1]), int(sys.argv[2])
n = set_threads(threads)
warm = get_engine("default", threads=threads)
cold = Engine(warm.model, warm.tokenizer, cache_bytes=0)
prompts = [render(SELF_CHECK_INPUT, user_input=f"How do I bake bread number {i}?") for i in range(checks)]
def timed(engine):
    engine.score(prompts[0], ["Yes", "No"])
    out = []
    for p in prompts:
        t0 = time.perf_counter(); engine.score(p, ["Yes", "No"]); out.append(time.perf_counter() - t0)
    return sorted(out)[len(out) // 2]
print(json.dumps({"threads": n, "cold": timed(cold), "warm": timed(warm)}))
"""


def spin(stop: mp.Event) -> None:
    while not stop.is_set():
        pass


def measure(threads: int | None, checks: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(threads), str(checks)],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cores = len(os.sched_getaffinity(0))
    rows = []
    for load in ("quiet", "other cores busy"):
        stop = mp.Event()
        spinners = [mp.Process(target=spin, args=(stop,)) for _ in range(cores - 1 if load != "quiet" else 0)]
        for p in spinners:
            p.start()
        time.sleep(0.5)
        try:
            for threads in (1, 2, None):
                log.info("%s, threads=%s ...", load, threads or "default")
                r = measure(threads, args.checks)
                rows.append((load, "default" if threads is None else str(threads), r))
        finally:
            stop.set()
            for p in spinners:
                p.join()
    print(f"\n{cores} usable cores; median of {args.checks} checks, embedded guard, score(['Yes', 'No'])\n")
    print("| load | threads asked | threads used | cold check ms | warm check ms |")
    print("|---|---|---:|---:|---:|")
    for load, asked, r in rows:
        print(f"| {load} | {asked} | {r['threads']} | {r['cold'] * 1e3:.1f} | {r['warm'] * 1e3:.1f} |")
    base = {load: r for load, asked, r in rows if asked == "1"}
    worst = max(r["cold"] / base[load]["cold"] for load, asked, r in rows if asked == "2")
    print(f"\nworst cold-check slowdown of 2 threads vs 1: {worst:.1f}x")


if __name__ == "__main__":
    main()
