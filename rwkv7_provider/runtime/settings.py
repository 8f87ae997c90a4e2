"""`EngineSettings`: the one definition of every engine setting, its default and its checks.

`get_engine` and `Engine` take it whole (or its fields as keyword arguments), and the guardrails provider and
the LangChain classes expose its fields as parameters (`ProviderSettings` extends it). Every rule, the ones
that relate two settings included, is checked when the settings are built: a guardrails config fails when it
loads, naming the setting, never at its first request. A new engine setting is one field here plus its use
in `registry.py` / `engine.py` (and a row of the README's parameter table, which a test checks).

Numbers are checked strictly (`threads: "2"` or `max_wait: nan` is refused, not converted): a quoted value in
a config is more likely a mistake than a wish. No torch import at module level: building settings stays cheap
(torch is imported only to check a CUDA device or a quantize format).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..dtypes import canonical_dtype
from ..errors import ParameterError
from .options import format_errors, suggest

DEVICE = re.compile(r"(cpu|cuda)(:\d+)?")
# A prompt costs time linear in its length (memory stays flat: prefills run in pieces); past this many tokens a
# request is refused with an InputError rather than silently truncated, because a guard that checks only part
# of a message can be steered by what it did not read.
DEFAULT_MAX_PROMPT_TOKENS = 32768
DEFAULT_MAX_WAIT = 0.002  # seconds an idle scheduler may wait to fill a batch, only right after serving several
COMPUTE_DTYPES = ("float32", "bfloat16")


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


class EngineSettings(BaseModel):
    """How a checkpoint is loaded (`dtype` ... `tokenizer`) and how its engine serves (`cache_bytes` ...).

    The fields in `ENGINE_KEY` select the engine: each distinct value is its own copy of the weights; the
    others configure the engine that the first caller on a checkpoint creates (see `get_engine`).
    """

    model_config = ConfigDict(extra="forbid")

    ENGINE_KEY: ClassVar[tuple[str, ...]] = ("dtype", "device", "quantize", "compute_dtype")
    # Applied when a checkpoint loads: an `Engine` built around an already loaded model cannot honour them.
    LOADING: ClassVar[tuple[str, ...]] = (*ENGINE_KEY, "threads", "tokenizer")

    dtype: str | None = Field(None, description="float32 / bfloat16 / float16; None: float32 on CPU, else as stored")
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    quantize: str | None = Field(None, description="CPU weight format for fast decoding: bf16, int8 or q4")
    compute_dtype: str | None = Field(
        None, description="prefill GEMM dtype of a quantized model, float32 or bfloat16; None: measured"
    )
    threads: int | None = Field(
        None, ge=1, strict=True, description="torch CPU threads (process-wide); None: half the usable cores"
    )
    tokenizer: Any = Field(None, description="'world', a tokenizer.json or a Tokenizer; None: the checkpoint's own")
    cache_bytes: int | None = Field(
        None, ge=0, strict=True, description="byte budget of the state cache (0: off; None: 64 states, <= 1 GiB)"
    )
    cache_dir: str | None = Field(None, description="directory that persists cached states across restarts")
    max_batch_size: int | None = Field(
        None, ge=1, strict=True, description="most requests per batched model call (None: 32 on CPU, 128 on CUDA)"
    )
    max_wait: float = Field(
        DEFAULT_MAX_WAIT, ge=0.0, le=1.0, strict=True, allow_inf_nan=False,
        description="seconds the engine may wait to fill a batch, only right after serving several requests",
    )
    max_prompt_tokens: int | None = Field(
        DEFAULT_MAX_PROMPT_TOKENS, ge=1, strict=True, description="longer prompts fail with an InputError (None: no limit)"
    )
    prefill_tokens: int | None = Field(
        None, ge=1, strict=True,
        description="most padded tokens per prefill forward, which bounds its activation memory "
        "(None: 1024 on CPU, 16384 on CUDA)",
    )
    snapshot_every: int | None = Field(
        None, ge=1, strict=True, description="also cache a state every this many tokens of a long prompt"
    )
    min_junction_tokens: int = Field(
        16, ge=1, strict=True,
        description="cache a state where two prompts diverge only when that saves at least this many tokens",
    )
    cuda_graphs: bool | None = Field(
        None, strict=True, description="replay the decode step from CUDA graphs (None: on for a CUDA model)"
    )

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> EngineSettings:
        """Settings from keyword arguments, with errors that name the setting (a `ParameterError`)."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as e:
            raise ParameterError(format_errors(e, "engine settings")) from None

    def engine_settings(self) -> EngineSettings:
        """Just the engine settings (of a subclass's instance, e.g. `ProviderSettings`), validated already."""
        return EngineSettings.model_construct(**{k: getattr(self, k) for k in EngineSettings.model_fields})

    def serving(self) -> dict[str, Any]:
        """The settings that are not part of the engine's key and not applied at load: an engine's own."""
        return {k: getattr(self, k) for k in EngineSettings.model_fields if k not in self.LOADING}

    @classmethod
    def known_names(cls) -> list[str]:
        """The names an error message lists (a subclass may accept more, e.g. LangChain's own fields)."""
        return sorted(EngineSettings.model_fields)

    @model_validator(mode="before")
    @classmethod
    def _known_names(cls, data: Any) -> Any:
        """Unknown names fail with a did-you-mean instead of pydantic's bare 'extra inputs' error."""
        if isinstance(data, dict):
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                known = cls.known_names()
                details = "; ".join(f"{k!r}{suggest(k, known)}" for k in unknown)
                raise ValueError(f"unknown rwkv7 parameter(s): {details}. Known parameters: {', '.join(known)}")
        return data

    @field_validator("dtype", "compute_dtype", mode="before")
    @classmethod
    def _dtype_name(cls, value: Any) -> str | None:
        return canonical_dtype(value)  # also accepts torch dtypes

    @field_validator("device", mode="before")
    @classmethod
    def _device_name(cls, value: Any) -> str:
        return value if isinstance(value, str) else str(value)  # a torch.device

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _path_name(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("compute_dtype")
    @classmethod
    def _compute_dtype(cls, value: str | None) -> str | None:
        if value is not None and value not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be float32 or bfloat16, got {value!r}")
        return value

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

    @field_validator("tokenizer", mode="before")
    @classmethod
    def _tokenizer_exists(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (str, os.PathLike)):
            value = os.fspath(value)
            if value.lower() == "world":
                return value
            path = Path(value).expanduser()
            if not (path.is_file() or (path / "tokenizer.json").is_file()):
                raise ValueError(f"tokenizer file not found: {value} (expected 'world' or a tokenizer.json)")
            return value
        from ..model.tokenizer import Tokenizer  # an object: its class is loaded already

        if not isinstance(value, Tokenizer):
            raise ValueError(f"tokenizer must be 'world', a tokenizer.json path or a Tokenizer, got {type(value).__name__}")
        return value

    @model_validator(mode="after")
    def _fits_together(self) -> EngineSettings:
        """Rules between settings, checked here so that a config with them fails when it loads."""
        on_cpu = self.device == "cpu"
        if self.quantize is not None and not on_cpu:
            raise ValueError(
                f"quantize={self.quantize!r} is a CPU decode format; on {self.device} use dtype: bfloat16 instead"
            )
        if self.compute_dtype is not None and self.quantize is None:
            raise ValueError("compute_dtype sets the prefill GEMMs of a quantized model: set quantize too, or remove it")
        if self.cuda_graphs and on_cpu:
            raise ValueError("cuda_graphs needs device: cuda")
        return self
