"""The process-wide engine registry: one engine (weights + prefix cache) per (checkpoint, dtype, device).

NeMo Guardrails builds one provider instance per `models:` entry and LangChain users build many model objects;
all of them on one checkpoint share its engine, so the weights are loaded once and every rail check benefits
from the prefixes any other instance has cached.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..model import RWKV7
from ..model.checkpoint import default_dtype, resolve_checkpoint
from ..model.tokenizer import Tokenizer, load_tokenizer
from .engine import Engine
from .options import DEFAULT_MAX_PROMPT_TOKENS, DEFAULT_MAX_WAIT, torch_dtype

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
# The embedded guard model, shipped with the guard pipeline that trains it.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "guard" / "assets"

_ENGINES: dict[tuple[str, str, str], tuple[Engine, tuple]] = {}
_ENGINES_LOCK = threading.Lock()


def resolve_model_path(model: str | Path = DEFAULT_MODEL) -> Path:
    """The checkpoint path for a model name: "default" is the embedded guard model, anything else a path."""
    if str(model) == DEFAULT_MODEL:
        if not (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
            raise CheckpointError(
                f"the embedded guard model is missing: expected {DEFAULT_MODEL_DIR / 'model.safetensors'} "
                "(reinstall rwkv7-provider, or pass model=<path to an RWKV-7 checkpoint>)"
            )
        return DEFAULT_MODEL_DIR
    return resolve_checkpoint(model).resolve()


def get_engine(
    model: str | Path = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    tokenizer: str | Path | Tokenizer | None = None,
    cache_bytes: int | None = None,
    cache_dir: str | Path | None = None,
    max_batch_size: int | None = None,
    max_wait: float = DEFAULT_MAX_WAIT,
    max_prompt_tokens: int | None = DEFAULT_MAX_PROMPT_TOKENS,
) -> Engine:
    """The process-wide engine for (checkpoint, dtype, device), loading the weights on first use only.

    dtype None is the model's default for the device (see `RWKV7.from_pretrained`). Later calls for the same key return the
    same engine whatever their tokenizer / cache / batching arguments (a differing value is logged): one copy
    of the weights, one cache and one scheduler per checkpoint.
    """
    path = resolve_model_path(model)
    device = torch.device(device)
    wanted = torch_dtype(dtype) or default_dtype(device, None)  # None: the checkpoint's own dtype
    key = (str(path), str(wanted).removeprefix("torch.") if wanted else "auto", str(device))
    settings = (tokenizer, cache_bytes, cache_dir, max_batch_size, max_wait, max_prompt_tokens)
    with _ENGINES_LOCK:
        if key in _ENGINES:
            engine, first = _ENGINES[key]
            if settings != first:
                log.warning("reusing the engine for %s: tokenizer, cache and batching settings stay %s", path, first)
            return engine
        loaded = RWKV7.from_pretrained(path, dtype=wanted, device=device)
        tok = load_tokenizer(tokenizer, model_path=path, vocab_size=loaded.config.vocab_size)
        engine = Engine(
            loaded,
            tok,
            cache_bytes=cache_bytes,
            cache_dir=cache_dir,
            name=path.name,
            max_batch_size=max_batch_size,
            max_wait=max_wait,
            max_prompt_tokens=max_prompt_tokens,
        )
        _ENGINES[key] = (engine, settings)
        log.info("engine for %s (%s, %s) ready", path, key[1], device)
        return engine
