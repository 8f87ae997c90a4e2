"""`ProviderSettings`: what a guardrails `models:` entry or a LangChain constructor may set.

It is the runtime's `GenerationOptions` (the per-call defaults) plus the engine settings that pick the
process-wide engine and the `choices` answer mode. A guardrails `models:` entry is built as
`cls(model=..., **parameters)` and a typo there would otherwise surface only at the first rail check as
"I'm sorry, an internal error has occurred", so unknown names fail at construction with a did-you-mean.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from ..dtypes import canonical_dtype
from ..errors import ParameterError
from ..runtime.options import (
    DEFAULT_MAX_PROMPT_TOKENS,
    DEFAULT_MAX_TOKENS_LIMIT,
    DEFAULT_MAX_WAIT,
    GenerationOptions,
    format_errors,
    suggest,
)

DEVICE = re.compile(r"(cpu|cuda)(:\d+)?")


def check_device(device: str) -> str:
    """`device` if this machine has it, else a ValueError that says what it has (torch is imported only for CUDA)."""
    if not DEVICE.fullmatch(device):
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but this machine has no usable CUDA GPU; use 'cpu'")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


class ProviderSettings(GenerationOptions):
    """Engine settings (`model` ... `cache_dir`, `max_batch_size`, `max_wait`, `max_prompt_tokens`) select and
    configure the shared engine; the generation options are this instance's defaults, overridable per call;
    `choices` switches to answering by scoring, and `block_threshold` moves the point where the first choice (a
    guard's "Yes", block) wins, so a deployment trades false positives for recall without retraining."""

    model: str = Field("default", description="checkpoint path, or 'default' for the embedded guard model")
    dtype: str | None = Field(None, description="float32 / bfloat16 / float16; None: the model's choice")
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    quantize: str | None = Field(None, description="CPU weight format for fast decoding: bf16, int8 or q4")
    compute_dtype: str | None = Field(None, description="prefill GEMM dtype of a quantized model; None: measured")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (process-wide); None: half the usable cores")
    tokenizer: str | None = Field(None, description="'world' or a tokenizer.json; None: the checkpoint's own")
    cache_bytes: int | None = Field(None, ge=0, description="byte budget of the state cache (0: off; None: default)")
    cache_dir: str | None = Field(None, description="directory that persists cached states across restarts")
    max_batch_size: int | None = Field(
        None, ge=1, description="most concurrent requests per batched model call (None: 32 on CPU, 128 on CUDA)"
    )
    max_wait: float = Field(
        DEFAULT_MAX_WAIT, ge=0.0, le=1.0, description="seconds the engine may wait to fill a batch under load"
    )
    max_prompt_tokens: int | None = Field(
        DEFAULT_MAX_PROMPT_TOKENS, ge=1, description="longer prompts fail with an InputError (None: no limit)"
    )
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
        description="with `choices`: the first choice is the answer when its probability, normalised over the "
        "choices, is >= this; otherwise the most probable other choice. None: the most probable choice",
    )

    @model_validator(mode="before")
    @classmethod
    def _known_names(cls, data: Any) -> Any:
        """Unknown names fail with a did-you-mean instead of pydantic's bare 'extra inputs' error."""
        if isinstance(data, dict):
            known = sorted(ProviderSettings.model_fields)
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                details = "; ".join(f"{k!r}{suggest(k, known)}" for k in unknown)
                raise ValueError(f"unknown rwkv7 parameter(s): {details}. Known parameters: {', '.join(known)}")
        return data

    @model_validator(mode="after")
    def _threshold_needs_choices(self) -> ProviderSettings:
        if self.block_threshold is not None and not self.choices:
            raise ValueError("block_threshold applies to `choices` scoring: set choices too, e.g. ['Yes', 'No']")
        return self

    @model_validator(mode="after")
    def _max_tokens_within_limit(self) -> ProviderSettings:
        check_max_tokens(self.max_tokens, self.max_tokens_limit)
        return self

    @field_validator("dtype", "compute_dtype")
    @classmethod
    def _dtype_name(cls, value: str | None) -> str | None:
        return canonical_dtype(value)

    @field_validator("quantize")
    @classmethod
    def _quantize_format(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from ..model.quantize import check_format  # torch only when a format is asked for

        return check_format(value)

    @field_validator("device")
    @classmethod
    def _device_usable(cls, value: str) -> str:
        return check_device(value)

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer_exists(cls, value: str | None) -> str | None:
        if value is None or value.lower() == "world":
            return value
        path = Path(value).expanduser()
        if not (path.is_file() or (path / "tokenizer.json").is_file()):
            raise ValueError(f"tokenizer file not found: {value} (expected 'world' or a tokenizer.json)")
        return value

    @field_validator("choices")
    @classmethod
    def _choices_valid(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if len(value) < 2 or any(not c.strip() for c in value) or len(set(value)) != len(value):
            raise ValueError(f"choices must be at least two distinct non-empty strings, got {value!r}")
        return value

    def engine_settings(self) -> dict[str, Any]:
        """Keyword arguments of `get_engine` (besides the model)."""
        names = ("dtype", "device", "quantize", "compute_dtype", "threads", "tokenizer", "cache_bytes", "cache_dir",
                 "max_batch_size", "max_wait", "max_prompt_tokens")
        return {k: getattr(self, k) for k in names}

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
