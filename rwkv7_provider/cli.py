"""`rwkv7-provider`: a thin dispatcher; each subcommand lives in its own module and is imported only when used."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import MissingDependencyError, RWKV7Error

# name -> (module, help). A module provides build_parser(parser) and `main(argv) -> exit code`.
COMMANDS = {
    "check": ("rwkv7_provider.commands.check", "moderate messages (arguments or stdin) as a config's input rail would"),
    "info": ("rwkv7_provider.commands.info", "a checkpoint's shape, parameters and the memory it needs per format"),
    "init-config": ("rwkv7_provider.commands.init_config", "copy a shipped NeMo Guardrails config to edit it"),
    "train-guard": ("rwkv7_provider.guard.train", "train or fine-tune the embedded RWKV-7 guard"),
    "average-guards": ("rwkv7_provider.guard.average", "one guard from the mean weights of fine-tunes differing in seed"),
    "eval-guard": ("rwkv7_provider.guard.evaluate", "evaluate a guard on labeled JSONL next to a TF-IDF baseline"),
    "serve": ("rwkv7_provider.server.serve", "serve models over an OpenAI-compatible HTTP API"),
    "build-kernels": ("rwkv7_provider.commands.build_kernels", "compile the CPU decode kernels ahead of the first model load"),
}
USAGE_ERROR = 2  # argparse's own exit code for bad arguments; bad input files and values get it too


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="rwkv7-provider", description="RWKV-7 provider tools; `rwkv7-provider COMMAND --help` for each command"
    )
    parser.add_argument("command", choices=list(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.parse_args(argv[:1] or ["--help"])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(COMMANDS[argv[0]][0])
    try:
        return module.main(argv[1:])
    except (RWKV7Error, MissingDependencyError, OSError) as e:  # bad input or setup: one clear line, no traceback
        print(f"rwkv7-provider {argv[0]}: error: {e}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
