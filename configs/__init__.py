"""The ready NeMo Guardrails configs, installed with the package as `rwkv7_provider.configs`.

Each folder here is one config (config.yml, prompts.yml and a one-line config.py that registers the provider).
Use one in place, or copy it to edit it:

    from rwkv7_provider import configs
    RailsConfig.from_path(str(configs.path("moderation")))      # the installed copy, read-only use
    configs.copy("moderation", "guardrails")                     # or: rwkv7-provider init-config moderation guardrails

Every folder that holds a config.yml is a config: a new one needs no registration here or in the packaging.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import ParameterError
from ..runtime.options import suggest

DIRECTORY = Path(__file__).resolve().parent


def names() -> list[str]:
    """The shipped configs, by folder name."""
    return sorted(p.name for p in DIRECTORY.iterdir() if (p / "config.yml").is_file())


def path(name: str) -> Path:
    """The directory of the shipped config `name` (e.g. "moderation"), for `RailsConfig.from_path`."""
    known = names()
    if name not in known:
        raise ParameterError(f"no shipped config {name!r}{suggest(name, known)}; the configs are: {', '.join(known)}")
    return DIRECTORY / name


def copy(name: str, destination: str | Path) -> Path:
    """Copy the shipped config `name` into `destination` (a new or empty directory) and return it.

    An existing non-empty directory is refused rather than merged into: a half-overwritten config is worse
    than none."""
    source, target = path(name), Path(destination).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ParameterError(f"{target} exists and is not an empty directory; choose a new one")
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target
