"""`rwkv7-provider init-config`: copy a shipped NeMo Guardrails config into a directory of your own.

The configs are installed inside the package (`rwkv7_provider.configs`); use one in place with
`RailsConfig.from_path(str(rwkv7_provider.configs.path("moderation")))`, or copy it with this command to change
its policy text, model or parameters.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import configs
from ..errors import ParameterError
from . import parse_args


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("name", nargs="?", help=f"the config to copy: {', '.join(configs.names())}")
    p.add_argument("destination", nargs="?", type=Path,
                   help="a new or empty directory (default: ./NAME)")
    p.add_argument("--list", action="store_true", help="list the shipped configs and where they are installed")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args("init-config", __doc__, build_parser, argv)
    if args.list:
        for name in configs.names():
            print(f"{name}\t{configs.path(name)}")
        return 0
    if not args.name:
        raise ParameterError(f"name the config to copy: {', '.join(configs.names())} (or --list)")
    target = configs.copy(args.name, args.destination or Path(args.name))
    print(f"copied the {args.name} config to {target}/; use it with RailsConfig.from_path({str(target)!r})")
    return 0
