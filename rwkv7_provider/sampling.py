"""Next-token choice with RWKV's conventions.

- Greedy (argmax) when the temperature is below `GREEDY_BELOW`: NeMo Guardrails asks for 0.001 and means
  "deterministic"; sampling at such temperatures would only add numerical noise.
- Penalties as in BlinkDL's pipeline: a token's logit drops by `presence + frequency * count`, where every
  count is multiplied by `penalty_decay` after each step, so old repetitions are gradually forgiven.
- Sampling follows `rwkv.utils.PIPELINE.sample_logits`: top-k and top-p cut the untempered distribution,
  then the temperature reshapes what is left; so a high temperature never widens the nucleus.
- End-of-text (id 0) is never sampled. When it is the single most likely token, the model is done: the
  sampler reports that (None) instead of emitting something else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GREEDY_BELOW = 1e-2
EOS_TOKEN = 0


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_decay: float = 0.996
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not 0 <= self.penalty_decay <= 1:
            raise ValueError(f"penalty_decay must lie in [0, 1], got {self.penalty_decay}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        if self.seed is not None and not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    @property
    def penalized(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty)


class Sampler:
    """One request's sampling state: repetition counts and its own random generator (seeded if asked)."""

    def __init__(self, params: SamplingParams, vocab_size: int, device: torch.device | str = "cpu") -> None:
        self.params = params
        self.counts = torch.zeros(vocab_size, device=device) if params.penalized else None
        self.generator: torch.Generator | None = None
        if params.seed is not None and not params.greedy:
            self.generator = torch.Generator(device=device).manual_seed(params.seed)

    def next_token(self, logits: torch.Tensor) -> int | None:
        """Choose from last-position logits [V] (not modified); None when end-of-text is the top token."""
        p = self.params
        if self.counts is not None:
            logits = logits - (p.presence_penalty * (self.counts > 0) + p.frequency_penalty * self.counts)
        best = int(logits.argmax())
        if best == EOS_TOKEN:
            return None
        token = best if p.greedy else self._sample(logits)
        if self.counts is not None:
            self.counts.mul_(p.penalty_decay)
            self.counts[token] += 1
        return token

    def _sample(self, logits: torch.Tensor) -> int:
        p = self.params
        probs = torch.softmax(logits.float(), dim=-1)
        probs[EOS_TOKEN] = 0
        probs /= probs.sum()
        if p.top_k and p.top_k < probs.numel():
            probs[probs < torch.topk(probs, p.top_k).values[-1]] = 0
        if p.top_p < 1:
            ordered = torch.sort(probs, descending=True).values
            cut = torch.searchsorted(torch.cumsum(ordered, 0), torch.tensor([p.top_p], device=probs.device))
            probs[probs < ordered[cut.clamp(max=probs.numel() - 1)]] = 0
        if p.temperature != 1:
            probs = torch.softmax(torch.log(probs) / p.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))
