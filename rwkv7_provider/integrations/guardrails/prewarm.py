"""Pre-warming a guardrails config: its prompts' fixed text is prefilled into the state cache at start-up.

A config's `config.py` is one line, `from rwkv7_provider.guardrails import init`: nemoguardrails imports it
(which registers the provider) and then calls `init(app)`, which is `init_config` below.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ...errors import RWKV7Error
from ..client import RWKV7Client
from . import PROVIDER_NAME
from .parameters import parse_provider_parameters

log = logging.getLogger(__name__)

USAGE_STATS_ENV = "NEMO_GUARDRAILS_NO_USAGE_STATS"


def _templates_by_model_type(config: Any) -> dict[str, list[str]]:
    """The text prompts each model type will receive: a task's own model type if the config has one
    (`self_check_input`, ...), otherwise the main model's."""
    types = {m.type for m in config.models}
    grouped: dict[str, list[str]] = {}
    for prompt in config.prompts or []:
        if prompt.content:
            task = prompt.task.split(" ")[0]  # "self_check_input $variant=x" is served like its base task
            grouped.setdefault(task if task in types else "main", []).append(prompt.content)
    return grouped


def prewarm_config(config: Any) -> None:
    """Prefill the fixed part of the config's text prompts into the state cache of the rwkv7 model that
    will receive them, so even the first request reads only its own text.

    `config` is a `RailsConfig` (a config.py's `init(app)` passes `app.config`). Entries with invalid
    parameters or a missing checkpoint are skipped here: nemoguardrails builds the models right after, and
    that reports the problem itself instead of as a failed config.py.
    """
    grouped = _templates_by_model_type(config)
    for entry in config.models:
        templates = grouped.get(entry.type)
        if entry.engine != PROVIDER_NAME or not templates:
            continue
        try:
            settings = parse_provider_parameters(entry.model or "default", dict(entry.parameters or {}))
            engine = RWKV7Client(settings).engine
        except RWKV7Error as e:
            log.warning("not prewarming the %s model: %s", entry.type, e)
            continue
        engine.prewarm_templates(templates)
        log.info(
            "prewarmed %d prompt template(s) for the %s model %s", len(templates), entry.type, settings.model
        )


def init_config(app: Any, *, usage_stats: bool = False) -> None:
    """What a config's `init(app)` should do: pre-warm the rwkv7 models' state caches with the config's prompts.

    Unless `usage_stats` (or the environment already says otherwise), also switch off NeMo Guardrails' usage
    telemetry, which `LLMRails` sends right after `init`: a local, private model should not phone home.
    """
    if not usage_stats:
        os.environ.setdefault(USAGE_STATS_ENV, "1")
    prewarm_config(app.config)
