"""RWKV-7 as a local NeMo Guardrails provider (`rwkv7`) and a LangChain LLM / chat model.

Layers (each folder one layer, imports point down only): `integrations/` (NeMo Guardrails, LangChain) over
`runtime/` (engine, prefix state cache, options), with `guard/` (the embedded guard's training pipeline and
weights) beside them; `model/` (RWKV-7 in PyTorch) and `kernels/` (the WKV-7 operator) below; `errors.py`
holds the one base class `RWKV7Error` of every error the package raises for bad input, `dtypes.py` the dtype
names every layer accepts.

`import rwkv7_provider` is cheap: the public names below are imported on first access, so LangChain-only
users never pay for nemoguardrails' import (seconds) and nobody pays for torch until a model is used.
Registering the guardrails provider = `import rwkv7_provider.guardrails` (or `rwkv7_provider.register()`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS = {
    "Engine": "runtime.engine",
    "GenerationOptions": "runtime.options",
    "get_engine": "runtime.registry",
    "RWKV7Model": "guardrails",
    "register": "guardrails",
    "prewarm_config": "guardrails",
    "RWKV7LLM": "integrations.langchain.llms",
    "ChatRWKV7": "integrations.langchain.chat_models",
    "RWKV7Error": "errors",
    "ParameterError": "errors",
    "CheckpointError": "errors",
    "TokenizerError": "errors",
    "InputError": "errors",
    "InsufficientMemoryError": "errors",
}

__all__ = [
    "RWKV7LLM",
    "ChatRWKV7",
    "CheckpointError",
    "Engine",
    "GenerationOptions",
    "InputError",
    "InsufficientMemoryError",
    "ParameterError",
    "RWKV7Error",
    "RWKV7Model",
    "TokenizerError",
    "get_engine",
    "prewarm_config",
    "register",
]

if TYPE_CHECKING:
    from .errors import (
        CheckpointError,
        InputError,
        InsufficientMemoryError,
        ParameterError,
        RWKV7Error,
        TokenizerError,
    )
    from .guardrails import RWKV7Model, prewarm_config, register
    from .integrations.langchain.chat_models import ChatRWKV7
    from .integrations.langchain.llms import RWKV7LLM
    from .runtime.engine import Engine
    from .runtime.options import GenerationOptions
    from .runtime.registry import get_engine


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
