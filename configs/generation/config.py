"""Registers the `rwkv7` provider and pre-warms its prefix-state cache with this config's prompts.

NeMo Guardrails imports this file before it builds the models, then calls `init(app)`. Usage telemetry is
off unless the environment already says otherwise: everything here runs locally.
"""

import os

os.environ.setdefault("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")

from rwkv7_provider.guardrails import prewarm_config  # importing it registers `rwkv7`


def init(app) -> None:
    prewarm_config(app.config)
