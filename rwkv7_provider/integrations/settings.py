"""`ProviderSettings`: what a guardrails `models:` entry or a LangChain constructor may set.

It is the runtime's `GenerationOptions` (the per-call defaults) plus its `EngineSettings` (which pick and
configure the process-wide engine), plus the checkpoint (`model`) and the `choices` answer mode: every name
and rule is defined once, in those schemas, and checked here when a config loads. A guardrails `models:` entry
is built as `cls(model=..., **parameters)` and a typo there would otherwise surface only at the first rail
check as "I'm sorry, an internal error has occurred", so unknown names fail at construction with a
did-you-mean.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ..errors import ParameterError
from ..runtime.options import DEFAULT_MAX_TOKENS_LIMIT, GenerationOptions, format_errors
from ..runtime.settings import EngineSettings


class ProviderSettings(GenerationOptions, EngineSettings):
    """`model` and the engine settings select and configure the shared engine; the generation options are this
    instance's defaults, overridable per call; `choices` switches to answering by scoring, and
    `block_threshold` moves the point where the first choice (a guard's "Yes", block) wins, so a deployment
    trades false positives for recall without retraining."""

    model: str = Field("default", description="checkpoint path, or 'default' for the embedded guard model")
    max_tokens_limit: int = Field(
        DEFAULT_MAX_TOKENS_LIMIT,
        ge=1,
        description="the largest `max_tokens` a call may ask for; more fails with a ParameterError (a runaway "
        "generation holds a batch slot for minutes)",
    )
    choices: list[str] | None = Field(
        None, description="answer by scoring these strings (e.g. ['Yes', 'No']) instead of sampling"
    )
    block_threshold: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        strict=True,  # a number, never the string "0.5"
        allow_inf_nan=False,
        description="with `choices`: the first choice is the answer when its probability, normalised over the "
        "choices, is >= this; otherwise the most probable other choice. None: the most probable choice",
    )

    unfamiliar_script: Literal["score", "block", "allow"] = Field(
        "allow",
        description="with `choices`, for a known template's user text mostly (more than half of its letters) "
        "outside the scripts the model was trained on (Latin for the embedded guard): 'score' it as any "
        "other text, 'block' it, or 'allow' it (judging only its words in those scripts, if it has any)",
    )

    @classmethod
    def known_names(cls) -> list[str]:
        return sorted(ProviderSettings.model_fields)

    @model_validator(mode="after")
    def _threshold_needs_choices(self) -> ProviderSettings:
        if self.block_threshold is not None and not self.choices:
            raise ValueError("block_threshold applies to `choices` scoring: set choices too, e.g. ['Yes', 'No']")
        return self

    @model_validator(mode="after")
    def _max_tokens_within_limit(self) -> ProviderSettings:
        check_max_tokens(self.max_tokens, self.max_tokens_limit)
        return self

    @model_validator(mode="after")
    def _script_policy_needs_choices(self) -> ProviderSettings:
        if "unfamiliar_script" in self.model_fields_set and not self.choices:
            raise ValueError("unfamiliar_script applies to `choices` scoring: set choices too, e.g. ['Yes', 'No']")
        return self

    @field_validator("unfamiliar_script", mode="before")
    @classmethod
    def _script_policy(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in ("score", "block", "allow"):
            return value.lower()
        raise ValueError(f"unfamiliar_script must be 'score', 'block' or 'allow', got {value!r}")

    @field_validator("choices")
    @classmethod
    def _choices_valid(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if len(value) < 2 or any(not c.strip() for c in value) or len(set(value)) != len(value):
            raise ValueError(f"choices must be at least two distinct non-empty strings, got {value!r}")
        return value

    def generation_options(self) -> GenerationOptions:
        """This instance's generation defaults."""
        return GenerationOptions.model_validate({k: getattr(self, k) for k in GenerationOptions.names()})


def check_max_tokens(max_tokens: int, limit: int | None) -> None:
    """A ValueError (a ParameterError through `parse_settings` / the client) when `max_tokens` passes `limit`."""
    if limit is not None and max_tokens > limit:
        raise ValueError(
            f"max_tokens={max_tokens} is more than max_tokens_limit={limit} (a provider / server setting: "
            "raise it, or ask for fewer tokens)"
        )


def parse_settings(data: dict[str, Any]) -> ProviderSettings:
    """Validate settings with errors that name the fix (a `ParameterError`, never a raw pydantic error)."""
    try:
        return ProviderSettings(**data)
    except ValidationError as e:
        raise ParameterError(format_errors(e)) from None
