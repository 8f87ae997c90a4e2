"""The process-wide engine registry: one engine (weights + prefix cache) per (checkpoint, dtype, device).

NeMo Guardrails builds one provider instance per `models:` entry and LangChain users build many model objects;
all of them on one checkpoint share its engine, so the weights are loaded once and every rail check benefits
from the prefixes any other instance has cached.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import torch

from ..dtypes import torch_dtype
from ..errors import CheckpointError, ParameterError
from ..model import RWKV7
from ..model.checkpoint import default_dtype, resolve_checkpoint
from ..model.tokenizer import load_tokenizer
from .engine import Engine
from .settings import EngineSettings
from .structure import trained_templates

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
# The embedded guard model, shipped with the guard pipeline that trains it.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "guard" / "assets"

_ENGINES: dict[tuple, tuple[Engine, dict[str, Any]]] = {}  # key -> (engine, the settings it was built with)
_ENGINES_LOCK = threading.Lock()


def default_threads() -> int:
    """Half the cores this process may use (at least one).

    Why not torch's default (every core): CPU torch spins its worker threads, so on a machine whose other
    cores are busy a check with all threads collapses (measured on 2 cores with one busy: a cold guard check
    took 1.0-1.7 s with 2 threads and 0.017 s with 1). Half leaves room for the rest of the service.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, usable // 2)


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op CPU threads (process-wide: torch has one pool) to `threads` or `default_threads()`."""
    n = threads or default_threads()
    if n != torch.get_num_threads():
        log.info("torch CPU threads: %d -> %d", torch.get_num_threads(), n)
        torch.set_num_threads(n)
    return n


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


def get_engine(model: str | Path = DEFAULT_MODEL, settings: EngineSettings | None = None, **kwargs: Any) -> Engine:
    """The process-wide engine for (checkpoint, dtype, device, quantize, compute_dtype), loaded on first use only.

    Settings are one `EngineSettings` or its fields as keyword arguments (`get_engine(path, quantize="int8")`),
    checked before anything loads. dtype None is the model's default for the device; `quantize` (CPU: None,
    "bf16", "int8", "q4") and `compute_dtype` (prefill GEMMs of a quantized model; None: measured at load) as in
    `RWKV7.from_pretrained`, which also refuses, before reading any weight, a model the device has no memory
    for. Later calls for the same key return the same engine whatever their tokenizer / cache / batching
    settings (a differing value is logged): one copy of the weights, one cache and one scheduler per
    checkpoint. `threads` sets torch's CPU thread count for the whole process (see `set_threads`) when given,
    and when the first engine is built.
    """
    if settings is None:
        settings = EngineSettings.parse(kwargs)
    elif kwargs:
        raise ParameterError(f"pass settings= or keyword settings, not both (got {sorted(kwargs)} too)")
    path = resolve_model_path(model)
    device = torch.device(settings.device)
    wanted = torch_dtype(settings.dtype) or default_dtype(device, None)  # None: the checkpoint's own dtype
    gemm = torch_dtype(settings.compute_dtype)
    key = (str(path), str(wanted).removeprefix("torch.") if wanted else "auto", str(device), settings.quantize, str(gemm))
    own = {"tokenizer": settings.tokenizer, **settings.serving()}
    with _ENGINES_LOCK:
        if settings.threads is not None or not _ENGINES:
            set_threads(settings.threads)
        if key in _ENGINES:
            engine, first = _ENGINES[key]
            if own != first:
                log.warning("reusing the engine for %s: tokenizer, cache and batching settings stay %s", path, first)
            return engine
        loaded = RWKV7.from_pretrained(
            path, dtype=wanted, device=device, quantize=settings.quantize, compute_dtype=gemm
        )
        tok = load_tokenizer(settings.tokenizer, model_path=path, vocab_size=loaded.config.vocab_size)
        engine = Engine(loaded, tok, settings, name=path.name)
        engine.register_templates(trained_templates(path))  # a guard knows the templates it was trained on
        _ENGINES[key] = (engine, own)
        log.info("engine for %s (%s, %s, quantize=%s) ready", path, key[1], device, settings.quantize)
        return engine
