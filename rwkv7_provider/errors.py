"""Every error the package raises for bad input derives from `RWKV7Error` (a `ValueError`), so a caller
catches one class, and each subclass names what was wrong. A dependency-free leaf module: every layer,
`rwkv7_provider.model` included, may import it.

Two failures are deliberately not `RWKV7Error`s, because nothing was wrong with the input: a missing optional
package (`MissingDependencyError`, a `ModuleNotFoundError`, so `except ImportError` code keeps working) and a
request its client cancelled (the standard `concurrent.futures.CancelledError`, or `asyncio.CancelledError`
in the cancelled task itself), which `except RWKV7Error` / `except ValueError` must never swallow.
"""

from __future__ import annotations

import re


class RWKV7Error(ValueError):
    """Base class: the input (a checkpoint, a parameter, a prompt, a data file) cannot be used as given."""


class CheckpointError(RWKV7Error):
    """The file or directory is not a usable RWKV-7 checkpoint; the message says why."""


class TokenizerError(RWKV7Error):
    """A tokenizer is missing, unreadable or does not fit the model."""


class ParameterError(RWKV7Error):
    """A provider / LangChain / engine parameter is unknown, misspelled or has an invalid value."""


class InputError(RWKV7Error):
    """A prompt or token sequence cannot be processed: empty, ids out of range, wrong type or shape."""


class InsufficientMemoryError(CheckpointError):
    """The model would not fit in the memory available on its device; the message gives both numbers."""


class GuardDataError(RWKV7Error):
    """A guard training or evaluation data file is missing or malformed; the message names file and line."""


class EmbedInitError(RWKV7Error):
    """`train-guard --embed-init` cannot read the encoder it was given."""


class MissingDependencyError(ModuleNotFoundError):
    """An optional dependency of the feature in use is not installed; the message says how to install it."""


DISTRIBUTION = "rwkv7-provider"


def extra_requirements(extra: str) -> list[str]:
    """The requirements of one of our extras, as the installed metadata states them (version pins included);
    empty when the package runs from a source tree without being installed."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        declared = requires(DISTRIBUTION) or []
    except PackageNotFoundError:
        return []
    marker = re.compile(rf"""extra\s*==\s*['"]{re.escape(extra)}['"]""")
    return [r.split(";")[0].strip() for r in declared if marker.search(r)]


def missing_dependency(error: ModuleNotFoundError, extra: str, feature: str) -> MissingDependencyError:
    """The error to raise when an optional dependency is absent: it names the package and how to install it.

    rwkv7-provider is not on a package index, so `pip install 'rwkv7-provider[extra]'` would fail: the message
    gives the extra's own requirements and the checkout / wheel forms of installing the extra."""
    package = (error.name or "").split(".")[0]
    needed = " ".join(f"'{r}'" for r in extra_requirements(extra)) or package
    return MissingDependencyError(
        f"{feature} needs the `{package}` package, which is not installed: pip install {needed} "
        f"(the `{extra}` extra; from a checkout: pip install '.[{extra}]', from a wheel: "
        f"pip install 'rwkv7_provider-<version>-py3-none-any.whl[{extra}]')",
        name=package,
    )
