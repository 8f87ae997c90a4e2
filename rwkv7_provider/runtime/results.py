"""What the engine returns: a finished generation, and the scores of a choice between answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Generation:
    """A finished generation.

    finish_reason: "stop" (a stop string appeared; `text` ends before it), "length" (max_tokens reached)
    or "eos" (end-of-text was the model's most likely next token; it is never emitted).
    cached_tokens: prompt tokens served from the prefix cache.
    """

    text: str
    finish_reason: Literal["stop", "length", "eos"]
    stop_sequence: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


@dataclass(frozen=True)
class ScoreResult:
    """Choice scores: `logprobs` are each choice's total log-probability under the model;
    `probability` is the best choice's share after normalising over the given choices only."""

    best: str
    probability: float
    logprobs: dict[str, float]
    prompt_tokens: int
    cached_tokens: int
