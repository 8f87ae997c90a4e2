"""Every error the package raises for bad input derives from `RWKV7Error` (a `ValueError`), so a caller
catches one class, and each subclass names what was wrong. A dependency-free leaf module: every layer,
`rwkv7_provider.model` included, may import it.
"""

from __future__ import annotations


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


class GuardDataError(RWKV7Error):
    """A guard training or evaluation data file is missing or malformed; the message names file and line."""


class EmbedInitError(RWKV7Error):
    """`train-guard --embed-init` cannot read the encoder it was given."""


def missing_dependency(error: ModuleNotFoundError, extra: str, feature: str) -> ModuleNotFoundError:
    """The import error to raise when an optional dependency is absent: it names the pip extra to install."""
    package = (error.name or "").split(".")[0]
    return ModuleNotFoundError(
        f"{feature} needs the `{package}` package, which is not installed: pip install 'rwkv7-provider[{extra}]'",
        name=package,
    )
