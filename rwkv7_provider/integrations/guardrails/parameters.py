"""A guardrails `models:` entry's `parameters:`, checked when the config loads.

Besides the settings schema's own checks, nemoguardrails 0.24 itself refuses some names under its default
framework (LangChain-era flags, `*_api_key` style aliases); for those the error says the rwkv7 way to say the
same thing instead of nemoguardrails' generic message.
"""

from __future__ import annotations

import re
from typing import Any

from ...errors import ParameterError
from ..settings import ProviderSettings, parse_settings

# Names that nemoguardrails 0.24 refuses in `parameters:` under its default framework, and what to use instead.
REJECTED_BY_NEMOGUARDRAILS = {
    "streaming": "remove it: stream by calling `LLMRails.stream_async()`; the rwkv7 provider always streams",
    "disable_streaming": "remove it: the rwkv7 provider always supports streaming",
    "verbose": "remove it: use Python logging (logger 'rwkv7_provider') for details",
    "cache": "use `cache_bytes` (size of the recurrent-state prefix cache) and `cache_dir` (persist it)",
    "callbacks": "remove it: callbacks belong to the LangChain classes, not to a guardrails config",
    "tags": "remove it",
    "metadata": "remove it",
    "name": "remove it: the model is named by `model:`",
    "model_kwargs": "put its entries directly under `parameters:`",
}
REJECTED_SUFFIX = re.compile(r"_(api_key|base_url|api_base|endpoint)$")
NO_ENDPOINT = "remove it: rwkv7 runs locally, there is no endpoint or key"


def parse_provider_parameters(model: str, parameters: dict[str, Any]) -> ProviderSettings:
    """Validate a guardrails `models:` entry (`model` + `parameters`), with errors that name the fix."""
    rejected = [k for k in parameters if k in REJECTED_BY_NEMOGUARDRAILS or REJECTED_SUFFIX.search(k)]
    if rejected:
        hints = "; ".join(f"{k!r}: {REJECTED_BY_NEMOGUARDRAILS.get(k, NO_ENDPOINT)}" for k in rejected)
        raise ParameterError(f"parameter(s) not accepted for the rwkv7 provider: {hints}")
    return parse_settings({"model": model, **parameters})
