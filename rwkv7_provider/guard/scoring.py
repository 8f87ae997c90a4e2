"""How a guard model answers a check, shared by training and evaluation.

A check is the exact prompt the self-check rails send; the guard's answer is " Yes" (block) or " No" (allow),
read off the next-token distribution at the end of the prompt. All prompts of a batch share one template, so
the template's fixed prefix runs once and its state is expanded over the batch; only the user-specific part
(message + question) runs per example, right-padded (`forward_hidden(..., lengths=...)` keeps each row exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from ..errors import CheckpointError, InputError, TokenizerError
from ..model.rwkv7 import RWKV7
from ..model.tokenizer import encodable, specials_as_text
from ..runtime.structure import Plan, structure
from ..runtime.templates import split_template
from .data import Example, prompt_for, truncate_middle
from .prompts import ANSWER_ALLOW, ANSWER_BLOCK

PAD = "<|endoftext|>"  # id 0: padding only, never a target
END = "\n"  # what the guard says after its answer, so a generating caller stops at once


class GuardTokens:
    """The tokenizer plus the ids the guard's task needs (answers as single tokens, newline, pad)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = specials_as_text(tokenizer)  # as the engine encodes: "<|endoftext|>" in text is text
        ids = [tokenizer.encode(s).ids for s in (" " + ANSWER_BLOCK, " " + ANSWER_ALLOW, END)]
        if any(len(i) != 1 for i in ids):
            raise TokenizerError("the tokenizer must encode ' Yes', ' No' and '\\n' as single tokens "
                             "(with a trained vocabulary: is --vocab-size too small?)")
        self.block, self.allow, self.end = (i[0] for i in ids)
        self.pad = tokenizer.token_to_id(PAD)
        self._prefix: dict[str, list[int]] = {}

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch([encodable(t) for t in texts], add_special_tokens=False)]

    def prefix_ids(self, template: str) -> list[int]:
        """Tokens of the template before the user message: the part shared by every prompt of a batch."""
        if template not in self._prefix:
            self._prefix[template] = self.encode([split_template(template, "user_input")[0]])[0]
        return self._prefix[template]


@dataclass
class Batch:
    prefix: torch.Tensor  # [1, P] the template's shared prefix
    suffix: torch.Tensor  # [B, T] message + question + answer token, right-padded
    lengths: torch.Tensor  # [B] number of real suffix tokens, answer included
    labels: torch.Tensor  # [B] 1 = unsafe

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device) for t in (self.prefix, self.suffix, self.lengths, self.labels)))


def encode_checks(
    examples: list[Example], template: str, toks: GuardTokens, max_tokens: int, answers: bool
) -> Batch:
    """Token tensors for one template and a list of checks; with `answers` the gold answer is appended."""
    return encode_prompts([prompt_for(ex, template) for ex in examples], [ex.label for ex in examples], template,
                          toks, max_tokens, answers)


def encode_prompts(
    prompts: list[str], labels: list[int], template: str, toks: GuardTokens, max_tokens: int, answers: bool
) -> Batch:
    """`encode_checks` for prompts rendered from `template` already (the pieces of `provider_plan`)."""
    prefix = toks.prefix_ids(template)
    full = toks.encode(prompts)
    # The prefix's last token can merge with the message's first characters; share only what all agree on.
    shared = len(prefix)
    for ids in full:
        while ids[:shared] != prefix[:shared]:
            shared -= 1
    if shared == 0:
        raise InputError("template prefix is empty: the template must have text before {{ user_input }}")
    rows = []
    for ids, label in zip(full, labels):
        ids = truncate_middle(ids[shared:], max_tokens)
        rows.append(ids + ([toks.block if label else toks.allow] if answers else []))
    lengths = torch.tensor([len(r) for r in rows])
    suffix = torch.full((len(rows), int(lengths.max())), toks.pad, dtype=torch.long)
    for i, r in enumerate(rows):
        suffix[i, : len(r)] = torch.tensor(r)
    return Batch(torch.tensor([prefix[:shared]]), suffix, lengths, torch.tensor(labels))


def provider_plan(ex: Example, template: str) -> Plan:
    """What the provider scores for this check (`runtime/structure.py`): the whole prompt (`prompt_for`), then
    the pieces of its spans scored alone (imitation parts, sentences, quotations); the most blocking of those
    that may decide (`Plan.decides`) decides."""
    return structure(template).plan(ex.variables(), frozenset())


def answer_hidden(model: RWKV7, batch: Batch, positions: torch.Tensor) -> torch.Tensor:
    """Hidden states [B, K, C] at `positions` [B, K] of each row, prefix run once and shared."""
    _, state = model.forward_hidden(batch.prefix)
    hidden, _ = model.forward_hidden(batch.suffix, state.expand(batch.suffix.shape[0]))
    return hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


@torch.no_grad()
def p_unsafe(model: RWKV7, batch: Batch, toks: GuardTokens) -> torch.Tensor:
    """P(Yes) / (P(Yes) + P(No)) at the end of each prompt: the guard's probability that the check blocks."""
    logits = model.head(answer_hidden(model, batch, (batch.lengths - 1).unsqueeze(1))[:, 0]).float()
    return torch.softmax(logits[:, [toks.block, toks.allow]], dim=-1)[:, 0]


def score_examples(
    model: RWKV7, toks: GuardTokens, examples: list[Example], template: str, max_tokens: int = 100_000,
    batch_size: int = 16, pieces: bool = True,
) -> list[float]:
    """P(unsafe) for every example under one template, batched by length (order preserved). With `pieces`, as
    the provider decides a check (`provider_plan`), so the card's metrics are the provider's; without, the
    whole prompt only (what training optimises)."""
    plans = [provider_plan(ex, template) if pieces else None for ex in examples]
    jobs = [(i, k, prompt) for i, (ex, plan) in enumerate(zip(examples, plans))
            for k, prompt in enumerate(plan.prompts if plan else (prompt_for(ex, template),))]
    jobs.sort(key=lambda job: len(job[2]))
    p_block = [[0.0] * len(plan.prompts) if plan else [0.0] for plan in plans]
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        batch = encode_prompts([prompt for _, _, prompt in chunk], [0] * len(chunk), template, toks, max_tokens, False)
        for (i, k, _), p in zip(chunk, p_unsafe(model, batch, toks).tolist()):
            p_block[i][k] = p
    return [ps[plan.deciding(ps)] if plan else ps[0] for plan, ps in zip(plans, p_block)]


def load_guard(path: Path) -> tuple[RWKV7, GuardTokens]:
    tok_file = Path(path) / "tokenizer.json"
    if not tok_file.is_file():
        raise CheckpointError(f"{path} is not a guard directory: no tokenizer.json")
    return RWKV7.from_pretrained(path), GuardTokens(Tokenizer.from_file(str(tok_file)))


