"""Next-token choice with RWKV's conventions.

- Greedy (argmax) when the temperature is below `options.GREEDY_BELOW`: NeMo Guardrails asks for 0.001 and means
  "deterministic"; sampling at such temperatures would only add numerical noise.
- Penalties as in BlinkDL's pipeline: a token's logit drops by `presence + frequency * count`, where every
  count is multiplied by `penalty_decay` after each step, so old repetitions are gradually forgiven.
- Sampling follows `rwkv.utils.PIPELINE.sample_logits`: top-k and top-p cut the untempered distribution,
  then the temperature reshapes what is left; so a high temperature never widens the nucleus.
- End-of-text (id 0) is never sampled. When it is the single most likely token, the model is done: the
  sampler reports that (None) instead of emitting something else.
"""

from __future__ import annotations

import torch

from .options import GenerationOptions

EOS_TOKEN = 0


class Sampler:
    """One request's sampling state: repetition counts and its own random generator (seeded if asked)."""

    def __init__(self, params: GenerationOptions, vocab_size: int, device: torch.device | str = "cpu") -> None:
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
