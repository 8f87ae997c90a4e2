"""`RWKV7Client`: runs requests on the process-wide engine for one `ProviderSettings`.

The three front ends (`RWKV7Model` for NeMo Guardrails, `RWKV7LLM` and `ChatRWKV7` for LangChain) each hold
one client (composition, as LangChain's partner packages do) and stay thin, so they behave identically:
the same defaults, the same call-time overrides, the same `choices` scoring and chat-reply trimming.
The client reads its settings' generation defaults on every call, so a default changed after construction
applies; the engine settings are read once, when the engine is first needed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import ParameterError
from ..runtime.options import GenerationOptions
from ..runtime.structure import ascore_as_data, score_as_data, share
from .chat_format import CHAT_STOP, clean_reply
from .settings import ProviderSettings, check_max_tokens

if TYPE_CHECKING:
    from ..runtime.engine import Engine
    from ..runtime.results import Generation, ScoreResult, TokenLogprob


@dataclass(frozen=True)
class Completion:
    """One finished request, whatever produced it (sampling or scoring).

    `probability` and `scores` (choice -> log-probability, normalised over the choices) are set only when the
    answer came from `choices`; `logprobs` only for a generation asked for them (the `logprobs` option).
    """

    text: str
    finish_reason: str
    stop_sequence: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    probability: float | None = None
    scores: dict[str, float] | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None

    @property
    def usage(self) -> dict[str, int]:
        return {
            "input_tokens": self.prompt_tokens,
            "output_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cached_tokens": self.cached_tokens,
        }


def check_checkpoint(settings: ProviderSettings) -> None:
    """Fail at construction, not at the first request, when the checkpoint cannot be used: from its headers
    (a text file renamed .pth, a folder without weights, another RWKV generation, missing or mis-shaped
    tensors) and from the memory it would need in the chosen dtype / format on the chosen device."""
    from ..dtypes import torch_dtype
    from ..model.checkpoint import inspect_checkpoint
    from ..model.loading import check_memory, estimate_memory
    from ..runtime.registry import resolve_model_path

    info = inspect_checkpoint(resolve_model_path(settings.model))
    need = estimate_memory(info, dtype=torch_dtype(settings.dtype), device=settings.device, quantize=settings.quantize)
    check_memory(info, need)


class RWKV7Client:
    """Requests: sampling, or scoring when `choices` is set. `chat=True` marks a World-format prompt: the answer
    then ends with the assistant's turn and comes back without the format's surrounding whitespace."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """The shared engine for the settings' checkpoint, loaded on first use (constructing stays cheap)."""
        if self._engine is None:
            from ..runtime.registry import get_engine

            self._engine = get_engine(self.settings.model, self.settings.engine_settings())
        return self._engine

    def options(self, stop: list[str] | str | None, chat: bool, overrides: dict[str, Any]) -> GenerationOptions:
        """The settings' generation defaults with validated call-time overrides; the settings' stop strings,
        the call's and (for chat) the end of the assistant's turn are all honoured."""
        call_stop = [stop] if isinstance(stop, str) else list(stop or [])
        extra = [CHAT_STOP, *call_stop] if chat else call_stop
        options = self.settings.generation_options().updated(overrides, extra_stop=extra)
        try:
            check_max_tokens(options.max_tokens, self.settings.max_tokens_limit)
        except ValueError as e:
            raise ParameterError(str(e)) from None
        return options

    def complete(
        self, prompt: str, stop: list[str] | str | None = None, *, chat: bool = False, **overrides: Any
    ) -> Completion:
        options = self.options(stop, chat, overrides)
        if self.settings.choices:
            done = self._scored(self.classify(prompt))
        else:
            done = self._generated(self.engine.generate(prompt, options))
        return replace(done, text=clean_reply(done.text)) if chat else done

    async def acomplete(
        self, prompt: str, stop: list[str] | str | None = None, *, chat: bool = False, **overrides: Any
    ) -> Completion:
        options = self.options(stop, chat, overrides)
        if self.settings.choices:
            done = self._scored(await self.aclassify(prompt))
        else:
            done = self._generated(await self.engine.agenerate(prompt, options))
        return replace(done, text=clean_reply(done.text)) if chat else done

    def complete_stream(
        self, prompt: str, stop: list[str] | str | None = None, *, chat: bool = False, **overrides: Any
    ) -> Iterator[str | Completion]:
        """Text deltas as they are decoded, then the `Completion` (a scored answer comes as one delta)."""
        options = self.options(stop, chat, overrides)
        trim = _ReplyTrimmer(chat)
        if self.settings.choices:
            yield from trim.feed(self.classify(prompt))
            return
        deltas = self.engine.stream(prompt, options)
        try:
            for delta in deltas:
                yield from trim.feed(delta)
        finally:  # a consumer that closes this generator early cancels the request now, not at collection
            deltas.close()
        yield from trim.feed(deltas.generation)

    async def acomplete_stream(
        self, prompt: str, stop: list[str] | str | None = None, *, chat: bool = False, **overrides: Any
    ) -> AsyncIterator[str | Completion]:
        options = self.options(stop, chat, overrides)
        trim = _ReplyTrimmer(chat)
        if self.settings.choices:
            for out in trim.feed(await self.aclassify(prompt)):
                yield out
            return
        deltas = self.engine.astream(prompt, options)
        try:
            async for delta in deltas:
                for out in trim.feed(delta):
                    yield out
        finally:
            await deltas.aclose()
        for out in trim.feed(deltas.generation):
            yield out

    def classify(self, prompt: str) -> ScoreResult:
        """The `choices` answer to `prompt`: structure-aware when the prompt renders a template the engine knows
        (`runtime/structure.py`, with the `unfamiliar_script` policy), literal otherwise, then decided."""
        return self._verdict(*score_as_data(self.engine, prompt, self.settings.choices, self.settings.unfamiliar_script))

    async def aclassify(self, prompt: str) -> ScoreResult:
        """`classify` without blocking the event loop."""
        choices, policy = self.settings.choices, self.settings.unfamiliar_script
        return self._verdict(*await ascore_as_data(self.engine, prompt, choices, policy))

    def _verdict(self, s: ScoreResult, forced: str | None) -> ScoreResult:
        """The decided answer, or the one the `unfamiliar_script` policy forces (its probability stays the
        model's)."""
        decided = self._decided(s)
        if forced is None:
            return decided
        first, *others = self.settings.choices
        best = first if forced == "block" else max(others, key=decided.logprobs.__getitem__)
        return replace(decided, best=best, probability=share(decided, best))

    def _decided(self, s: ScoreResult) -> ScoreResult:
        """The answer under `block_threshold`: the first choice when its probability, normalised over the
        choices, is >= the threshold, otherwise the most probable of the others; `probability` is the
        answer's normalised probability. Without a threshold the engine's most probable choice stands."""
        threshold = self.settings.block_threshold
        if threshold is None:
            return s
        first, *others = self.settings.choices
        best = first if share(s, first) >= threshold else max(others, key=s.logprobs.__getitem__)
        return replace(s, best=best, probability=share(s, best))

    @staticmethod
    def _generated(g: Generation) -> Completion:
        return Completion(
            text=g.text,
            finish_reason="stop" if g.finish_reason == "eos" else g.finish_reason,  # eos: the model was done
            stop_sequence=g.stop_sequence,
            prompt_tokens=g.prompt_tokens,
            completion_tokens=g.completion_tokens,
            cached_tokens=g.cached_tokens,
            logprobs=g.logprobs,
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
            done = RWKV7Client._scored(item)
            return [done.text, done]
        done = RWKV7Client._generated(item)
        return [replace(done, text=clean_reply(done.text)) if self.chat else done]
