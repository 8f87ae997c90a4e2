"""The everyday `rwkv7-provider` commands (check, info, init-config, build-kernels); `cli.py` dispatches to them.

Each module is one command: `build_parser(parser)` declares its arguments and `main(argv)` returns the exit
code. They sit above everything else and only compose the public pieces below them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def parse_args(
    name: str,
    doc: str,
    build_parser: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
    argv: list[str] | None,
    epilog: str | None = None,
) -> argparse.Namespace:
    """A command's arguments; its `--help` opens with the first paragraph of the module's docstring."""
    parser = argparse.ArgumentParser(prog=f"rwkv7-provider {name}", description=doc.split("\n\n")[0], epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return build_parser(parser).parse_args(argv)
