"""The one definition of every generation option, its default and its check.

`GenerationOptions` is what `Engine.generate` / `stream` take (as keyword arguments or as one object), what
the guardrails provider and the LangChain classes expose as parameters (their settings schema inherits it),
and what the README's parameter table describes. Values are checked once, here, and every failure is a
`ParameterError` that names the option (with a did-you-mean for a misspelled name).

No torch import at module level: building a provider or a LangChain model must stay cheap.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ParameterError

GREEDY_BELOW = 1e-2  # temperatures below this decode greedily (NeMo Guardrails asks for 0.001 meaning "deterministic")
DEFAULT_MAX_TOKENS = 256
# The largest `max_tokens` a provider / server accepts unless configured otherwise: a bound, so that a request
# asking for 10**9 tokens cannot hold a batch slot for hours.
DEFAULT_MAX_TOKENS_LIMIT = 8192


def suggest(name: str, known: list[str]) -> str:
    """' (did you mean 'x'?)' for a near miss, else ''."""
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def format_errors(error: ValidationError, what: str = "rwkv7 parameters") -> str:
    """One line per invalid field, without pydantic's URLs."""
    lines = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}" if where else msg)
    return f"invalid {what}: " + "; ".join(lines)


class GenerationOptions(BaseModel):
    """Decoding settings. None passed for any of them (LangChain passes unset options as None) means its default."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(1.0, ge=0.0, allow_inf_nan=False, description="below 0.01: greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    top_k: int = Field(0, ge=0, description="0 disables top-k")
    presence_penalty: float = Field(0.0, allow_inf_nan=False)
    frequency_penalty: float = Field(0.0, allow_inf_nan=False)
    penalty_decay: float = Field(0.996, ge=0.0, le=1.0, description="repetition counts decay by this per token")
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1)
    stop: list[str] | None = Field(None, description="generation ends before the first of these strings")
    seed: int | None = Field(None, description="seeded sampling: the same seed gives the same text")
    logprobs: int | None = Field(
        None, ge=0, le=20, description="report each generated token's log-probability and this many most likely "
        "alternatives (the model's own distribution, before temperature, top-p, top-k and penalties)"
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _stop_nonempty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not s for s in value):
            raise ValueError("stop strings must be non-empty")
        return list(dict.fromkeys(value)) if value else None

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    @property
    def penalized(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty)

    @classmethod
    def names(cls) -> list[str]:
        return list(GenerationOptions.model_fields)

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> GenerationOptions:
        """Options given as keyword arguments (None = default), checked with errors that name the option."""
        return GenerationOptions().updated(options)

    def updated(self, overrides: Mapping[str, Any], extra_stop: list[str] | tuple[str, ...] = ()) -> GenerationOptions:
        """A copy with call-time `overrides` applied (None keeps the current value); `extra_stop` strings are
        honoured on top of the configured ones."""
        known = self.names()
        unknown = [k for k in overrides if k not in known]
        if unknown:
            details = "; ".join(f"{k!r}{suggest(k, known)}" for k in unknown)
            raise ParameterError(f"unsupported generation option(s): {details}. Supported: {', '.join(known)}")
        merged = {k: getattr(self, k) for k in known} | {k: v for k, v in overrides.items() if v is not None}
        if extra_stop:
            stop = merged["stop"]
            merged["stop"] = [*([stop] if isinstance(stop, str) else stop or []), *extra_stop]
        try:
            return GenerationOptions.model_validate(merged)
        except ValidationError as e:
            raise ParameterError(format_errors(e, "generation options")) from None
