"""RWKV-7 as a local NeMo Guardrails provider (`rwkv7`) and a LangChain LLM / chat model.

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
    "Engine": "engine",
    "get_engine": "engine",
    "RWKV7Model": "guardrails",
    "register": "guardrails",
    "prewarm_config": "guardrails",
    "RWKV7LLM": "llms",
    "ChatRWKV7": "chat_models",
    "ParameterError": "params",
}

__all__ = [
    "RWKV7LLM",
    "ChatRWKV7",
    "Engine",
    "ParameterError",
    "RWKV7Model",
    "get_engine",
    "prewarm_config",
    "register",
]

if TYPE_CHECKING:
    from .chat_models import ChatRWKV7
    from .engine import Engine, get_engine
    from .guardrails import RWKV7Model, prewarm_config, register
    from .llms import RWKV7LLM
    from .params import ParameterError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
