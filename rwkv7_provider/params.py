"""Provider parameters: one definition, validated once, shared by the guardrails provider and LangChain.

A guardrails `models:` entry is built as `cls(model=..., **parameters)` and a typo there would otherwise
surface only at the first rail check as "I'm sorry, an internal error has occurred." So every name is
checked when the config loads: unknown names get a did-you-mean, names that nemoguardrails itself
rejects (LangChain-era flags, `*_api_key` style aliases) get the rwkv7 way to say the same thing.

`RWKV7Params` also runs a request on the process-wide engine (sampling, or scoring with `choices`), so the
three front ends (`RWKV7Model`, `RWKV7LLM`, `ChatRWKV7`) stay thin and behave identically.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .chat_format import CHAT_STOP, clean_reply

if TYPE_CHECKING:
    from .engine import Engine, Generation, ScoreResult

log = logging.getLogger(__name__)

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}

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


class ParameterError(ValueError):
    """A provider parameter is unknown, misspelled or has an invalid value; the message says which and why."""


@dataclass(frozen=True)
class Completion:
    """One finished request, whatever produced it (sampling or scoring).

    `probability` and `scores` (choice -> log-probability) are set only when the answer came from `choices`.
    """

    text: str
    finish_reason: str
    stop_sequence: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    probability: float | None = None
    scores: dict[str, float] | None = None

    @property
    def usage(self) -> dict[str, int]:
        return {
            "input_tokens": self.prompt_tokens,
            "output_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cached_tokens": self.cached_tokens,
        }


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class SamplingParams(BaseModel):
    """Decoding settings: defaults on the instance, overridable per call (`temperature`, `max_tokens`, ...)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(1.0, ge=0.0, description="0 (or nearly) means greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="0 disables top-k")
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_decay: float = Field(0.996, ge=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1)
    stop: list[str] | None = Field(None, description="generation ends before the first of these strings")
    seed: int | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _stop_nonempty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not s for s in value):
            raise ValueError("stop strings must be non-empty")
        return value


SAMPLING_FIELDS = tuple(SamplingParams.model_fields)


class RWKV7Params(SamplingParams):
    """Everything a `models:` entry or a LangChain constructor may set, and the request runner over the engine.

    Engine settings (`dtype`, `device`, `tokenizer`, `cache_bytes`, `cache_dir`) pick the process-wide engine,
    so every instance on one checkpoint shares its weights and its prefix cache.
    """

    model: str = Field("default", description="checkpoint path, or 'default' for the embedded guard model")
    dtype: str | None = Field(None, description="float32 / bfloat16 / float16; None: float32 on CPU")
    device: str = "cpu"
    tokenizer: str | None = Field(None, description="'world' or a tokenizer.json; None: the checkpoint's own")
    cache_bytes: int | None = Field(
        None, ge=0, description="byte budget of the state cache (0: off; None: default)"
    )
    cache_dir: str | None = Field(None, description="directory that persists cached states across restarts")
    choices: list[str] | None = Field(
        None, description="answer by scoring these strings (e.g. ['Yes', 'No']) instead of sampling"
    )

    _engine: Engine | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _known_names(cls, data: Any) -> Any:
        """Unknown names fail with a did-you-mean instead of pydantic's bare 'extra inputs' error."""
        if isinstance(data, dict):
            known = sorted(cls.model_fields)
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                details = "; ".join(f"{k!r}{_suggest(k, known)}" for k in unknown)
                raise ValueError(
                    f"unknown rwkv7 parameter(s): {details}. Known parameters: {', '.join(known)}"
                )
        return data

    @field_validator("dtype")
    @classmethod
    def _dtype_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return DTYPES[value.lower().removeprefix("torch.")]
        except KeyError:
            raise ValueError(f"unsupported dtype {value!r}; use one of float32, bfloat16, float16") from None

    @field_validator("choices")
    @classmethod
    def _choices_valid(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if len(value) < 2 or any(not c.strip() for c in value) or len(set(value)) != len(value):
            raise ValueError(f"choices must be at least two distinct non-empty strings, got {value!r}")
        return value

    @property
    def engine(self) -> Engine:
        """The shared engine for this checkpoint, loaded on first use (constructing an instance stays cheap)."""
        if self._engine is None:
            from .engine import get_engine

            self._engine = get_engine(
                self.model,
                dtype=self.dtype,
                device=self.device,
                tokenizer=self.tokenizer,
                cache_bytes=self.cache_bytes,
                cache_dir=self.cache_dir,
            )
        return self._engine

    def sampling(self, stop: list[str], **overrides: Any) -> dict[str, Any]:
        """Engine keyword arguments: instance defaults, then validated call-time overrides.

        Stop strings from the instance and from the call are both honoured.
        """
        overrides = {k: v for k, v in overrides.items() if v is not None}  # None: keep the instance default
        unknown = [k for k in overrides if k not in SAMPLING_FIELDS]
        if unknown:
            details = "; ".join(f"{k!r}{_suggest(k, list(SAMPLING_FIELDS))}" for k in unknown)
            raise ParameterError(
                f"unsupported call-time option(s): {details}. Supported: {', '.join(SAMPLING_FIELDS)}"
            )
        merged = {name: getattr(self, name) for name in SAMPLING_FIELDS} | overrides
        try:
            params = SamplingParams.model_validate(merged).model_dump()
        except ValidationError as e:
            raise ParameterError(format_errors(e)) from None
        params["stop"] = list(dict.fromkeys([*(params["stop"] or []), *stop])) or None
        return params

    # Requests: sampling, or scoring when `choices` is set. `chat=True` marks a World-format prompt: the answer
    # then ends with the assistant's turn and comes back without the format's surrounding whitespace.

    def _request(self, stop: list[str] | str | None, chat: bool, overrides: dict[str, Any]) -> dict[str, Any]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        return self.sampling([CHAT_STOP, *stops] if chat else stops, **overrides)

    def complete(
        self, prompt: str, stop: list[str] | str | None = None, *, chat: bool = False, **overrides: Any
    ) -> Completion:
        params = self._request(stop, chat, overrides)
        if self.choices:
            done = self._scored(self.engine.score(prompt, self.choices))
        else:
            done = self._generated(self.engine.generate(prompt, **params))
        return replace(done, text=clean_reply(done.text)) if chat else done

    async def acomplete(
        self, prompt: str, stop: list[str] | str | None = None, *, chat: bool = False, **overrides: Any
    ) -> Completion:
        params = self._request(stop, chat, overrides)
        if self.choices:
            done = self._scored(await self.engine.ascore(prompt, self.choices))
        else:
            done = self._generated(await self.engine.agenerate(prompt, **params))
        return replace(done, text=clean_reply(done.text)) if chat else done

    def complete_stream(
        self, prompt: str, stop: list[str] | str | None = None, *, chat: bool = False, **overrides: Any
    ) -> Iterator[str | Completion]:
        """Text deltas as they are decoded, then the `Completion` (a scored answer comes as one delta)."""
        params = self._request(stop, chat, overrides)
        trim = _ReplyTrimmer(chat)
        if self.choices:
            yield from trim.feed(self.engine.score(prompt, self.choices))
            return
        deltas = self.engine.stream(prompt, **params)
        for delta in deltas:
            yield from trim.feed(delta)
        yield from trim.feed(deltas.generation)

    async def acomplete_stream(
        self, prompt: str, stop: list[str] | str | None = None, *, chat: bool = False, **overrides: Any
    ) -> AsyncIterator[str | Completion]:
        params = self._request(stop, chat, overrides)
        trim = _ReplyTrimmer(chat)
        if self.choices:
            for out in trim.feed(await self.engine.ascore(prompt, self.choices)):
                yield out
            return
        deltas = self.engine.astream(prompt, **params)
        async for delta in deltas:
            for out in trim.feed(delta):
                yield out
        for out in trim.feed(deltas.generation):
            yield out

    @staticmethod
    def _generated(g: Generation) -> Completion:
        return Completion(
            text=g.text,
            finish_reason="stop" if g.finish_reason == "eos" else g.finish_reason,  # eos: the model was done
            stop_sequence=g.stop_sequence,
            prompt_tokens=g.prompt_tokens,
            completion_tokens=g.completion_tokens,
            cached_tokens=g.cached_tokens,
        )

    @staticmethod
    def _scored(s: ScoreResult) -> Completion:
        return Completion(
            text=s.best,
            finish_reason="stop",
            stop_sequence=None,
            prompt_tokens=s.prompt_tokens,
            completion_tokens=0,
            cached_tokens=s.cached_tokens,
            probability=s.probability,
            scores=dict(s.logprobs),
        )


class _ReplyTrimmer:
    """Turns engine stream items into deltas + a final `Completion`, trimming a chat reply like `clean_reply`.

    Leading whitespace is dropped and trailing whitespace held back until more text follows, so the
    concatenated deltas of a chat reply equal the non-streaming answer.
    """

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.started = False
        self.pending = ""

    def feed(self, item: str | Generation | ScoreResult) -> list[str | Completion]:
        if isinstance(item, str):
            if not self.chat:
                return [item] if item else []
            text = self.pending + (item if self.started else item.lstrip())
            self.started = self.started or bool(text)
            body = text.rstrip()
            self.pending = text[len(body) :]
            return [body] if body else []
        if hasattr(item, "best"):  # a scored answer: one delta, then the result
            done = RWKV7Params._scored(item)
            return [done.text, done]
        done = RWKV7Params._generated(item)
        return [replace(done, text=clean_reply(done.text)) if self.chat else done]


def format_errors(error: ValidationError) -> str:
    """One line per invalid parameter, without pydantic's URLs."""
    lines = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"]) or "parameters"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}" if err["loc"] else msg)
    return "invalid rwkv7 parameters: " + "; ".join(lines)


def parse_provider_parameters(model: str, parameters: dict[str, Any]) -> RWKV7Params:
    """Validate a guardrails `models:` entry (`model` + `parameters`), with errors that name the fix."""
    rejected = [k for k in parameters if k in REJECTED_BY_NEMOGUARDRAILS or REJECTED_SUFFIX.search(k)]
    if rejected:
        hints = "; ".join(
            f"{k!r}: {REJECTED_BY_NEMOGUARDRAILS.get(k, 'remove it: rwkv7 runs locally, there is no endpoint or key')}"
            for k in rejected
        )
        raise ParameterError(f"parameter(s) not accepted for the rwkv7 provider: {hints}")
    try:
        return RWKV7Params(model=model, **parameters)
    except ValidationError as e:
        raise ParameterError(format_errors(e)) from None
