"""Prefix-cache benchmark: what one self-check rail call costs with the state cache cold vs warm.

Model: the 0.1B World shape with random weights (timing does not depend on the values) and the World
tokenizer. Prompts: NeMo Guardrails' reference `self_check_input` prompt and an analogous
`self_check_output` one, each filled with 50 different messages of 5-60 words (seeded, so every run
sees the same text). Three engines share the weights and take turns message by message, so background
load affects them alike:
    cold     no cache: every prompt prefilled from scratch
    warm     template pre-warmed at start-up (`prewarm_templates`), as a provider does
    learned  no pre-warm: the second message creates the junction snapshot, later ones resume there
Each is measured for `score(prompt, ["Yes", "No"])` (log-probabilities over the vocabulary: the full head),
for `classify`, the same with `over_choices=True` (what the provider's moderation pass runs: only the choices'
head rows), and cold and warm also for `generate(max_tokens=3)`. A warm check should compute at most the
user's tokens plus the template's tail (fewer when it also shares its first words with an earlier message);
"learned" from its third message on.
Prints the table.
Usage: python bench/bench_cache.py [--messages 50] [--seed 0] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from machine import load_average, machine_lines
from rwkv7_provider.model import RWKV7, RWKV7Config
from rwkv7_provider.model.tokenizer import load_tokenizer

from rwkv7_provider.guard.prompts import NEMO_REFERENCE_INPUT, NEMO_REFERENCE_OUTPUT
from rwkv7_provider.runtime.engine import Engine
from rwkv7_provider.runtime.templates import stable_prefix, template_prefix

log = logging.getLogger("bench_cache")

SHAPE = {"n_layer": 12, "n_embd": 768, "vocab_size": 65536, "head_size": 64}
SHAPE |= {"dim_w": 64, "dim_a": 64, "dim_v": 32, "dim_g": 128}

# NeMo Guardrails' reference `self_check_input` / `self_check_output` prompts.
SELF_CHECK_INPUT, SELF_CHECK_OUTPUT = NEMO_REFERENCE_INPUT, NEMO_REFERENCE_OUTPUT

_WORD_LIST = """
the a my your our this that every some order account password refund delivery package store manager
weather tomorrow meeting schedule report invoice price discount product service support team
customer email phone address please could would can you help me with find tell show explain why how
what when where is are was be have need want like know about for from into over under after before
today yesterday again quickly really very not never always just also only still new old big small
good bad late early free paid broken missing wrong right open closed my their its train flight hotel
ticket seat menu recipe garden music movie book game code bug server laptop printer network
"""
WORDS = _WORD_LIST.split()


def messages(n: int, seed: int) -> list[str]:
    """`n` sentence-like messages of 5-60 words, the same for a given seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(5, 60))
        out.append(" ".join(words).capitalize() + rng.choice(".?!"))
    return out


def random_model(seed: int = 0, quantize: str | None = None) -> RWKV7:
    """The 0.1B World shape with the test suite's random weights (lively activations, no NaNs), loaded from a
    checkpoint file as a user's model is: with the CPU model's fast paths (the head and few-row products through
    the GEMV, each GEMM as measured for this machine; `model/kernel_choice.py`)."""
    from rwkv7_provider.model.threads import off_thread

    from rwkv7_provider.testing import random_state_dict

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random-0.1b.pth"
        # made off this thread, as loading is: the main thread keeps no OpenMP pool to slow the engine's
        off_thread(lambda: torch.save(random_state_dict(RWKV7Config(**SHAPE), seed=seed), path))
        return RWKV7.from_pretrained(path, quantize=quantize)  # the tensors are copied: the file may go


def run_check(engine: Engine, prompt: str, method: str) -> None:
    if method in ("score", "classify"):
        engine.score(prompt, ["Yes", "No"], over_choices=method == "classify")
    else:
        engine.generate(prompt, max_tokens=3, temperature=0.001, stop=["\n"])


def measure(
    engines: dict[str, Engine], prompts: list[str], method: str, prepare: Callable[[], None]
) -> dict[str, tuple[list[float], list[int]]]:
    """Latency (s) and prompt tokens computed for every check, per engine, taking turns per prompt."""
    prepare()
    results: dict[str, tuple[list[float], list[int]]] = {name: ([], []) for name in engines}
    for i, prompt in enumerate(prompts):
        for name, engine in engines.items():
            before = engine.cache_stats()["tokens_computed"]
            t0 = time.perf_counter()
            run_check(engine, prompt, method)
            results[name][0].append(time.perf_counter() - t0)
            results[name][1].append(engine.cache_stats()["tokens_computed"] - before)
        if (i + 1) % 10 == 0:
            log.info("%s: %d/%d checks", method, i + 1, len(prompts))
    return results


@dataclass(frozen=True)
class Row:
    prompt: str
    check: str
    cache: str
    mean_ms: float
    median_ms: float
    prompt_tokens: float
    computed: float
    user_tail: float
    within: str  # every check computed at most user + tail tokens ("learned": from the third message on)
    ratio: float


def summarize(
    task: str,
    method: str,
    results: dict[str, tuple[list[float], list[int]]],
    sizes: list[int],
    tail: list[int],
) -> list[Row]:
    cold_mean = statistics.mean(results["cold"][0])
    rows = []
    for name, (times, computed) in results.items():
        skip = 2 if name == "learned" else 0  # its first two messages build the junction
        ok = all(c <= e for c, e in zip(computed[skip:], tail[skip:]))
        rows.append(Row(
            task, method, name, 1000 * statistics.mean(times), 1000 * statistics.median(times),
            statistics.mean(sizes), statistics.mean(computed),
            statistics.mean(tail) if name != "cold" else float("nan"),
            "-" if name == "cold" else ("yes" if ok else "no"), statistics.mean(times) / cold_mean,
        ))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--quantize", choices=["bf16", "int8", "q4"], default=None,
                        help="store the large matrices compressed (default: fp32, as the checkpoint)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    log.info("building the 0.1B-shape model with random weights (%s, %d torch threads)", args.quantize or "fp32",
             torch.get_num_threads())
    model = random_model(args.seed, args.quantize)
    tokenizer = load_tokenizer("world")
    engines = {
        "cold": Engine(model, tokenizer, cache_bytes=0),
        "warm": Engine(model, tokenizer),
        "learned": Engine(model, tokenizer),
    }
    run_check(engines["cold"], "Warm-up: hello there.", "generate")  # first-call overheads out of the timings

    load_before = load_average()
    rows: list[Row] = []
    for task, template in (("self_check_input", SELF_CHECK_INPUT), ("self_check_output", SELF_CHECK_OUTPUT)):
        variable = "user_input" if task == "self_check_input" else "bot_response"
        prompts = [template.replace(f"{{{{ {variable} }}}}", m) for m in messages(args.messages, args.seed)]
        sizes = [len(tokenizer.encode(p)) for p in prompts]
        fixed = len(stable_prefix(tokenizer, template_prefix(template)))
        tail = [n - fixed for n in sizes]  # the user's tokens plus the template's tail

        def prepare(template: str = template) -> None:
            engines["warm"].cache.clear()
            engines["learned"].cache.clear()
            engines["warm"].prewarm_templates([template])

        for method in ("score", "classify", "generate"):
            log.info("%s / %s: %d messages", task, method, len(prompts))
            chosen = engines if method != "generate" else {k: engines[k] for k in ("cold", "warm")}
            rows += summarize(task, method, measure(chosen, prompts, method, prepare), sizes, tail)
    print(f"0.1B shape, {args.quantize or 'fp32'} weights; load average {load_before} before, {load_average()} after")
    print("\n".join(machine_lines(torch.get_num_threads())))
    print_table(rows)


def print_table(rows: list[Row]) -> None:
    head = ("prompt", "check", "cache", "mean ms", "median ms", "prompt tok", "computed tok", "user+tail tok",
            "<= user+tail", "x cold")  # fmt: skip
    print(" | ".join(f"{h:<17}" if i < 3 else f"{h:>13}" for i, h in enumerate(head)))
    print("-" * 160)
    for r in rows:
        text = (r.prompt, r.check, r.cache)
        numbers = (r.mean_ms, r.median_ms, r.prompt_tokens, r.computed, r.user_tail)
        cells = [f"{t:<17}" for t in text] + [f"{n:>13.1f}" for n in numbers]
        print(" | ".join([*cells, f"{r.within:>13}", f"{r.ratio:>12.2f}x"]))


if __name__ == "__main__":
    main()
