"""`rwkv7-provider average-guards`: one guard from the mean of the weights of fine-tunes that differ only in seed.

Why: short fine-tunes of one guard with one recipe and different seeds disagree by several points on single
checks (2026-12-03, four seeds: 0.923-0.969 of harmless messages with a quoted sentence still passing), so
shipping the best seed would be choosing by the score it is judged on. The mean of their weights (a "model
soup") keeps what they share and averages out what each seed picked up by chance; it is a model because the
fine-tunes start from the same weights and stay close to them. Guards trained from scratch, or from different
starting points, or with other settings than the seed, are refused: their mean is not a model of anything.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
from pathlib import Path

import torch

from ..errors import ParameterError
from ..model.rwkv7 import RWKV7
from ..runtime.structure import guard_info
from .data import DEFAULT_DATA_DIR

log = logging.getLogger(__name__)

PER_MEMBER = ("--seed", "--out", "--recipe-card")  # options members may differ in (with their values)
PER_MEMBER_FLAGS = ("--no-eval", "--no-progress")


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("guards", nargs="+", type=Path,
                   help="guard directories made by `train-guard --init` from one starting point with one recipe, "
                        "differing only in --seed (and --out)")
    p.add_argument("--out", type=Path, required=True, help="output directory (weights, tokenizer, card)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the training data, for the model card")
    p.add_argument("--no-eval", action="store_true", help="no held-out evaluation and no model card")
    p.add_argument("--recipe-card", type=Path,
                   help="for members trained on every source: the MODEL_CARD.md of the same recipe averaged with "
                        "sources held out; its held-out metrics go into this card")
    return p


def recipe(command: str) -> tuple[tuple[str, ...], str]:
    """A `train-guard` command split into what the members of one average share and its seed ("0" when the
    command does not set one, train-guard's default)."""
    words, shared, seed, skip = shlex.split(command), [], "0", None
    for w in words:
        if skip:
            seed = w if skip == "--seed" else seed
            skip = None
        elif w in PER_MEMBER:
            skip = w
        elif w.startswith("--seed="):
            seed = w.split("=", 1)[1]
        elif w not in PER_MEMBER_FLAGS and not w.startswith(tuple(f"{o}=" for o in PER_MEMBER)):
            shared.append(w)
    return tuple(shared), seed


def check_members(guards: list[Path]) -> list[dict]:
    """Each member's `guard` section of config.json, after checking that their mean is a model (see the module
    docstring); a clear error names the first member that does not fit."""
    if len(guards) < 2:
        raise ParameterError("average-guards needs at least two guards")
    infos = []
    for g in guards:
        info = guard_info(g)
        if not info.get("command") or not (g / "model.safetensors").is_file():
            raise ParameterError(f"{g} is not a guard made by `rwkv7-provider train-guard` (no config.json "
                                 "with its command, or no model.safetensors)")
        if not info.get("base"):
            raise ParameterError(f"{g} was trained from scratch: only fine-tunes of one guard (train-guard --init) "
                                 "can be averaged")
        infos.append(info)
    first, tokenizer = infos[0], (guards[0] / "tokenizer.json").read_bytes()
    recipes = [recipe(info["command"]) for info in infos]
    for g, info, (shared, _) in zip(guards[1:], infos[1:], recipes[1:]):
        if info["base"].get("path") != first["base"].get("path"):
            raise ParameterError(f"{g} was fine-tuned from {info['base'].get('path')}, {guards[0]} from "
                                 f"{first['base'].get('path')}: members must share their starting point")
        if shared != recipes[0][0]:
            raise ParameterError(f"{g} was trained with other settings than {guards[0]} (members may differ "
                                 f"only in --seed and --out):\n  {info['command']}\n  {first['command']}")
        if (g / "tokenizer.json").read_bytes() != tokenizer:
            raise ParameterError(f"{g} has another tokenizer than {guards[0]}")
    seeds = [seed for _, seed in recipes]
    if len(set(seeds)) < len(seeds):
        raise ParameterError(f"members share a seed ({', '.join(seeds)}): the same seed gives the same weights")
    return infos


def average_guards(guards: list[Path], out: Path, command: str) -> dict:
    """Write the mean of the members' weights to `out` (bf16, as train-guard saves) with their tokenizer; returns
    the `guard` section written to its config.json."""
    infos = check_members(guards)
    model = RWKV7.from_pretrained(guards[0])  # fp32: the mean is taken before rounding to bf16
    total = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for g in guards[1:]:  # one member in memory at a time besides the running sum
        member = RWKV7.from_pretrained(g)
        if member.config != model.config:
            raise ParameterError(f"{g} has another model shape than {guards[0]}")
        for k, v in member.state_dict().items():
            total[k] += v
    model.load_state_dict({k: v / len(guards) for k, v in total.items()})
    losses = [info.get("final_loss") for info in infos]
    info = dict(infos[0])
    info.update(
        command=command,
        members=[{"path": str(g), "command": i["command"], "final_loss": i.get("final_loss"),
                  "train_seconds": i.get("train_seconds")} for g, i in zip(guards, infos)],
        final_loss=sum(losses) / len(losses) if None not in losses else None,
        train_seconds=sum(i.get("train_seconds") or 0 for i in infos),
    )
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(guards[0] / "tokenizer.json", out / "tokenizer.json")
    model.save_pretrained(out, dtype=torch.bfloat16, extra_config={"guard": info})
    log.info("the mean of %d guards written to %s", len(guards), out)
    return info


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argparse.ArgumentParser(
        prog="rwkv7-provider average-guards", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)).parse_args(argv)
    command = "rwkv7-provider average-guards " + shlex.join(argv)
    recipe_text = ""
    if not args.no_eval:
        from .evaluate import require_baseline

        require_baseline()  # the model card compares with it: fail now, not after averaging
    if args.recipe_card:
        from .card import recipe_section

        if guard_info(args.guards[0]).get("heldout_sources") or not args.recipe_card.is_file():
            raise ParameterError("--recipe-card needs members trained with --heldout '' and an existing "
                                 "MODEL_CARD.md of the held-out average")
        recipe_text = recipe_section(args.recipe_card.read_text())
    info = average_guards(args.guards, args.out, command)
    if not args.no_eval:
        from .card import write_model_card

        write_model_card(args.out, args.data_dir, set(info["heldout_sources"]), command, info, recipe_text)
    return 0
