"""Next-token choice with RWKV's conventions, on the model's device without host synchronisation.

- Greedy (argmax) when the temperature is below `options.GREEDY_BELOW`: NeMo Guardrails asks for 0.001 and means
  "deterministic"; sampling at such temperatures would only add numerical noise.
- Penalties as in BlinkDL's pipeline: a token's logit drops by `presence + frequency * count`, where every
  count is multiplied by `penalty_decay` after each step, so old repetitions are gradually forgiven.
- Sampling follows `rwkv.utils.PIPELINE.sample_logits`: top-k and top-p cut the untempered distribution,
  then the temperature reshapes what is left; so a high temperature never widens the nucleus.
- End-of-text (id 0) is never sampled. When it is the single most likely token, the model is done: the
  sampler reports that (`END`, or None from `next_token`) instead of emitting something else.

Every choice stays a device tensor (`Sampler.choose`, `sample_batch`), so a batched decode step costs one
device-to-host copy of all rows' tokens, however many requests it serves.
"""

from __future__ import annotations

import torch

from .options import GenerationOptions

EOS_TOKEN = 0
END = -1  # what `choose` / `sample_batch` return for a row whose most likely next token is end-of-text


class Sampler:
    """One request's sampling state: repetition counts and its own random generator (seeded if asked)."""

    def __init__(self, params: GenerationOptions, vocab_size: int, device: torch.device | str = "cpu") -> None:
        self.params = params
        self.counts = torch.zeros(vocab_size, device=device) if params.penalized else None
        self.generator: torch.Generator | None = None
        if params.seed is not None and not params.greedy:
            self.generator = torch.Generator(device=device).manual_seed(params.seed)
        self.noted: tuple[float, list[tuple[int, float]]] | None = None  # see `note`

    def note(self, logits: torch.Tensor, token: int) -> None:
        """Keep the chosen `token`'s log-probability under the raw `logits` [V] and the `params.logprobs`
        most likely tokens (the `logprobs` option: read by the request once it has the token)."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        top = torch.topk(logp, self.params.logprobs) if self.params.logprobs else None
        alternatives = list(zip(top.indices.tolist(), top.values.tolist(), strict=True)) if top is not None else []
        self.noted = (float(logp[token]), alternatives)

    @property
    def plain_greedy(self) -> bool:
        """An argmax over the raw logits is all this sampler does (a batch serves such rows with one op)."""
        return self.params.greedy and self.counts is None

    def next_token(self, logits: torch.Tensor) -> int | None:
        """Choose from last-position logits [V] (not modified); None when end-of-text is the top token."""
        token = int(self.choose(logits))
        return None if token == END else token

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """The next token as a 0-d device tensor (`END` when end-of-text is the top token); no host sync."""
        p = self.params
        if self.counts is not None:
            logits = logits - (p.presence_penalty * (self.counts > 0) + p.frequency_penalty * self.counts)
        best = logits.argmax()
        token = best if p.greedy else self._sample(logits)
        if self.counts is not None:
            self.counts.mul_(p.penalty_decay)
            self.counts[token] += 1
        return torch.where(best == EOS_TOKEN, END, token)

    def _sample(self, logits: torch.Tensor) -> torch.Tensor:
        p = self.params
        probs = torch.softmax(logits.float(), dim=-1)
        probs[EOS_TOKEN] = 0
        probs /= probs.sum()
        if p.top_k and p.top_k < probs.numel():
            probs.masked_fill_(probs < torch.topk(probs, p.top_k).values[-1], 0)
        if p.top_p < 1:
            ordered = torch.sort(probs, descending=True).values
            cut = torch.searchsorted(torch.cumsum(ordered, 0), p.top_p)
            probs.masked_fill_(probs < ordered[cut.clamp(max=probs.numel() - 1)], 0)
        if p.temperature != 1:
            probs = torch.softmax(torch.log(probs) / p.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator)[0]


def sample_batch(logits: torch.Tensor, samplers: list[Sampler]) -> tuple[torch.Tensor, dict[int, Exception]]:
    """Next tokens [B] (long, on the logits' device, `END` for a finished row) for logits [B, V], row b drawn
    by samplers[b]: one argmax serves every plain greedy row, the others are drawn one by one.

    A row whose sampler raises (e.g. non-finite logits) is reported in the returned {row: error} instead,
    so the other rows keep their draws (and their random generators their positions).
    """
    best = logits.argmax(-1)
    tokens = torch.where(best == EOS_TOKEN, END, best)
    errors: dict[int, Exception] = {}
    for row, sampler in enumerate(samplers):
        if not sampler.plain_greedy:
            try:
                tokens[row] = sampler.choose(logits[row])
            except Exception as e:  # noqa: BLE001 - reported to that row's request only
                errors[row] = e
        if sampler.params.logprobs is not None and row not in errors and (token := int(tokens[row])) != END:
            sampler.note(logits[row], token)
    return tokens, errors
