"""`rwkv7-provider check`: moderate messages from the shell, as a guardrails config's input rail would.

It reads the config's `self_check_input` model entry and prompt (default: the shipped `moderation` config,
the embedded guard at its `block_threshold`), fills each message into the prompt and asks the model, exactly
as the rail does but without loading NeMo Guardrails. Exit code: 0 when every message is allowed, 1 when
any is blocked, 2 for bad input; so `rwkv7-provider check "$MESSAGE" && deliver` works in a script.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import configs
from ..errors import ParameterError
from ..integrations.client import Completion, RWKV7Client
from ..integrations.guardrails import PROVIDER_NAME
from ..integrations.guardrails.parameters import parse_provider_parameters
from ..runtime.templates import render
from . import parse_args

TASK = "self_check_input"
ANSWERS = ["Yes", "No"]  # what the self-check prompts ask for: "Yes" blocks
BLOCKED = 1


@dataclass(frozen=True)
class InputRail:
    """What a config's input self-check sends: the model entry's parameters and the prompt template."""

    model: str
    parameters: dict[str, Any]
    template: str


def load_input_rail(config: str) -> InputRail:
    """The `self_check_input` rail of a shipped config (by name) or of a config directory."""
    directory = Path(config).expanduser() if config not in configs.names() else configs.path(config)
    if not (directory / "config.yml").is_file():
        raise ParameterError(f"{config!r} is neither a shipped config ({', '.join(configs.names())}) nor a config directory")
    documents = [yaml.safe_load(f.read_text()) or {} for f in sorted(directory.glob("*.y*ml"))]
    models = [m for d in documents for m in d.get("models") or [] if m.get("type") == TASK]
    prompts = [p for d in documents for p in d.get("prompts") or [] if p.get("task") == TASK and p.get("content")]
    if not models or not prompts or models[0].get("engine") != PROVIDER_NAME:
        raise ParameterError(f"{directory} has no {TASK} model with engine {PROVIDER_NAME} and prompt to check with")
    entry = models[0]
    return InputRail(str(entry.get("model") or "default"), dict(entry.get("parameters") or {}), prompts[0]["content"])


def messages(texts: list[str]) -> Iterable[str]:
    """The arguments, or with none (or "-") every non-empty line of stdin."""
    if texts and texts != ["-"]:
        yield from texts
        return
    for line in sys.stdin:
        if line.strip():
            yield line.rstrip("\n")


def block_probability(done: Completion, answers: list[str]) -> float:
    """P(first answer), normalised over the answers: the guard's probability that the message is blocked."""
    top = max(done.scores.values())
    weights = {a: math.exp(lp - top) for a, lp in done.scores.items()}
    return weights[answers[0]] / sum(weights.values())


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("texts", nargs="*", metavar="MESSAGE",
                   help="messages to check; none or '-': one message per non-empty line of stdin")
    p.add_argument("--config", default="moderation",
                   help="a shipped config name or a config directory whose self_check_input rail to apply "
                        "(default: %(default)s)")
    p.add_argument("--model", help="checkpoint to use instead of the config's (default: the config's model)")
    p.add_argument("--threshold", type=float,
                   help="block when P(block) >= this, in (0, 1) (default: the config's block_threshold)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: the config's, else half the cores)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per message: {"text", "verdict", "p_block"}')
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args("check", __doc__, build_parser, argv, epilog=(
        "output: one line per message: allow|block, P(block), the message (tab-separated)\n"
        "exit code: 0 all allowed, 1 any blocked, 2 error"))
    rail = load_input_rail(args.config)
    overrides = {"choices": rail.parameters.get("choices") or ANSWERS, "block_threshold": args.threshold,
                 "threads": args.threads}
    parameters = rail.parameters | {k: v for k, v in overrides.items() if v is not None}
    client = RWKV7Client(parse_provider_parameters(args.model or rail.model, parameters))
    answers = client.settings.choices
    status = 0
    for text in messages(args.texts):
        done = client.complete(render(rail.template, user_input=text))
        verdict = "block" if done.text == answers[0] else "allow"
        p_block = block_probability(done, answers)
        status |= BLOCKED if verdict == "block" else 0
        if args.json:
            print(json.dumps({"text": text, "verdict": verdict, "p_block": round(p_block, 4)}), flush=True)
        else:
            print(f"{verdict}\t{p_block:.3f}\t{text}", flush=True)
    return status
