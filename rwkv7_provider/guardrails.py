"""Importing this module registers the `rwkv7` provider with NeMo Guardrails: what a config's `config.py` does.

The shipped configs' `config.py` is the one line `from rwkv7_provider.guardrails import init`: nemoguardrails
then calls `init(app)`, which pre-warms the state cache with the config's prompts (see `init_config`).
"""

from __future__ import annotations

from .integrations.guardrails.prewarm import init_config, prewarm_config
from .integrations.guardrails.provider import RWKV7Model, register

init = init_config

__all__ = ["RWKV7Model", "init", "init_config", "prewarm_config", "register"]

register()
