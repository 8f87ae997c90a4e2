"""What the engine returns: a finished generation, and the scores of a choice between answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token under the model's own distribution (before temperature, top-p, top-k and
    penalties: what the model thinks, whatever the sampler then drew).

    `id` is its token id, `token` its text (U+FFFD where it holds only part of a character; `bytes` are
    exact); `offset` is where the text decoded with it starts in the generation's text (a token completing a
    character shares the offset of the one that began it); `top` holds the most likely tokens at that step
    as (text, bytes, log-probability), most likely first.
    """

    id: int
    token: str
    bytes: bytes
    logprob: float
    offset: int
    top: tuple[tuple[str, bytes, float], ...]

    def openai(self) -> dict[str, Any]:
        """This entry as OpenAI's chat `logprobs.content` item (what the server sends, LangChain's metadata)."""
        return {"token": self.token, "logprob": self.logprob, "bytes": list(self.bytes),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(raw)} for t, raw, lp in self.top]}


@dataclass(frozen=True)
class Generation:
    """A finished generation.

    finish_reason: "stop" (a stop string appeared; `text` ends before it), "length" (max_tokens reached)
    or "eos" (end-of-text was the model's most likely next token; it is never emitted).
    cached_tokens: prompt tokens served from the prefix cache.
    logprobs: with the `logprobs` option, one entry per token whose text is (at least partly) in `text`.
    """

    text: str
    finish_reason: Literal["stop", "length", "eos"]
    stop_sequence: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class ScoreResult:
    """Choice scores: `logprobs` are each choice's total log-probability under the model (normalised over the
    choices instead when scored with `over_choices`); `probability` is the best choice's share after normalising
    over the given choices only."""

    best: str
    probability: float
    logprobs: dict[str, float]
    prompt_tokens: int
    cached_tokens: int
