"""The inference engine: a model, its tokenizer and its prefix state cache, shared by every provider instance
on one checkpoint (see `registry.get_engine`).

Every prompt goes through the prefix state cache (`cache.py`): the engine resumes from the deepest stored
snapshot on the prompt's token path and prefills only the rest. When the prompt follows a recorded path
beyond that snapshot (a template shared with an earlier prompt), the prefill is split where the paths
diverge and a snapshot is stored there, so from the third request on a fixed template costs only the
tokens after it.

Threads and asyncio tasks may call one engine concurrently: model calls run under one lock (CPU torch is
multi-threaded already), each decode loop keeps its own state and takes the lock per step, and the async
methods run model work in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, ParameterError
from ..model import RWKV7, RWKV7State
from ..model.tokenizer import Tokenizer
from .cache import Match, PrefixCache, Snapshot, model_fingerprint
from .options import GenerationOptions
from .results import Generation, ScoreResult
from .sampling import Sampler
from .streaming import AsyncStreamResult, StopMatcher, StreamResult, drain
from .templates import USER_VARIABLES, stable_prefix, template_prefix

log = logging.getLogger(__name__)

DEFAULT_CACHE_SNAPSHOTS = 64  # default budget: this many snapshots of the model's state...
MAX_DEFAULT_CACHE_BYTES = 1 << 30  # ...but never more than 1 GiB


@dataclass(frozen=True)
class _Request:
    ids: list[int]
    options: GenerationOptions


class Engine:
    """A model, its tokenizer and its prefix cache. Build it directly (tests, custom models) or through
    `get_engine` (shared per checkpoint).

    cache_bytes: snapshot budget (None = room for `DEFAULT_CACHE_SNAPSHOTS` states, at most 1 GiB; 0 = off).
    cache_dir: persist reusable snapshots there (junctions, pre-warmed prefixes, periodic ones).
    min_junction_tokens: split a prefill at a divergence point only when that saves later prompts at least
        this many tokens over the deepest snapshot: each split is one more forward call, whose fixed cost
        (reading every weight once) exceeds the saving for a few tokens, e.g. two messages starting "The".
    snapshot_every: also store a snapshot every this many tokens of a long prefill.
    name: how the model is named in logs and provider responses (`get_engine` uses the checkpoint's name).
    """

    def __init__(
        self,
        model: RWKV7,
        tokenizer: Tokenizer,
        *,
        cache_bytes: int | None = None,
        cache_dir: str | Path | None = None,
        min_junction_tokens: int = 16,
        snapshot_every: int | None = None,
        name: str = "rwkv7",
    ) -> None:
        if snapshot_every is not None and snapshot_every < 1:
            raise ParameterError(f"snapshot_every must be >= 1 or None, got {snapshot_every}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.min_junction_tokens = min_junction_tokens
        self.snapshot_every = snapshot_every
        self.vocab_size = model.config.vocab_size
        self._lock = threading.Lock()
        zero = Snapshot(
            model.zero_state(1), torch.zeros(model.config.n_embd, dtype=model.dtype, device=model.device)
        )
        if cache_bytes is None:
            cache_bytes = min(DEFAULT_CACHE_SNAPSHOTS * zero.nbytes, MAX_DEFAULT_CACHE_BYTES)
        self.fingerprint = model_fingerprint(model)
        self.cache = PrefixCache(
            fingerprint=self.fingerprint,
            dtype=model.dtype,
            budget_bytes=cache_bytes,
            expected={k: (tuple(t.shape), t.dtype) for k, t in zero.tensors().items()},
            device=model.device,
            directory=cache_dir,
            vocab_size=self.vocab_size,
        )

    # ---------------------------------------------------------------- prompt + prefill

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def prefill(self, token_ids: Sequence[int]) -> tuple[RWKV7State, torch.Tensor]:
        """(state after the tokens, last-position logits [V] float32), through the cache.

        Both are shared with the cache: read them, never modify them in place (clone first).
        """
        state, hidden, _ = self._prefill(self._check_ids(token_ids))
        with self._lock, torch.inference_mode():
            return state, self.model.head(hidden).float()

    def _prefill(self, ids: list[int], *, persist_end: bool = False) -> tuple[RWKV7State, torch.Tensor, int]:
        """(state, last hidden [C], tokens served from cache). Stores snapshots at the divergence point,
        every `snapshot_every` tokens and at the end."""
        with self._lock, torch.inference_mode():
            match: Match = self.cache.lookup(ids)
            snapshot, start = match.snapshot, match.depth
            if start == len(ids):
                if persist_end:  # pre-warming a prefix that traffic already cached
                    self.cache.insert(ids, persist=True)
                return snapshot.state, snapshot.hidden, start
            state = snapshot.state if snapshot else None
            for cut in self._cuts(start, match.shared, len(ids)):
                out, state = self.model.forward_hidden(self._tensor(ids[start:cut]), state)
                hidden = out[0, -1].clone()
                self.cache.insert(ids[:cut], Snapshot(state, hidden), persist=persist_end or cut < len(ids))
                start = cut
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s: prefill %d tokens, %d from cache; cache %s",
                self.name,
                len(ids),
                match.depth,
                self.cache.stats().as_dict(),
            )
        return state, hidden, match.depth

    def _cuts(self, start: int, shared: int, end: int) -> list[int]:
        cuts = {end}
        if start + self.min_junction_tokens <= shared < end:
            cuts.add(shared)
        if self.snapshot_every:
            k = self.snapshot_every
            cuts.update(range((start // k + 1) * k, end, k))
        return sorted(cuts)

    def _tensor(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor([ids], dtype=torch.long, device=self.model.device)

    def _check_ids(self, token_ids: Sequence[int]) -> list[int]:
        ids = [int(t) for t in token_ids]
        if not ids:
            raise InputError("empty prompt")
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise InputError(f"token id {bad} out of range for a vocabulary of {self.vocab_size}")
        return ids

    def _prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            if not prompt:
                raise InputError("empty prompt")
            return self._check_ids(self.encode(prompt))
        return self._check_ids(prompt)

    # ---------------------------------------------------------------- generation

    def generate(
        self, prompt: str | Sequence[int], options: GenerationOptions | None = None, **kwargs: Any
    ) -> Generation:
        """Complete `prompt` (text or token ids). Options as one `GenerationOptions` or as keyword arguments."""
        return drain(self.stream(prompt, options, **kwargs))

    def stream(
        self, prompt: str | Sequence[int], options: GenerationOptions | None = None, **kwargs: Any
    ) -> StreamResult:
        """Like `generate`, as text deltas: never half a UTF-8 character, never part of a stop string."""
        return StreamResult(self._decode(self._request(prompt, options, kwargs)))

    async def agenerate(
        self, prompt: str | Sequence[int], options: GenerationOptions | None = None, **kwargs: Any
    ) -> Generation:
        return await asyncio.to_thread(drain, self.stream(prompt, options, **kwargs))

    def astream(
        self, prompt: str | Sequence[int], options: GenerationOptions | None = None, **kwargs: Any
    ) -> AsyncStreamResult:
        """`async for delta in engine.astream(...)`; arguments are checked here, before any model work."""
        return AsyncStreamResult(self.stream(prompt, options, **kwargs))

    def _request(
        self, prompt: str | Sequence[int], options: GenerationOptions | None, kwargs: dict[str, Any]
    ) -> _Request:
        if options is None:
            options = GenerationOptions.parse(kwargs)
        elif kwargs:
            options = options.updated(kwargs)
        return _Request(self._prompt_ids(prompt), options)

    def _decode(self, req: _Request) -> Generator[str, None, Generation]:
        state, hidden, cached = self._prefill(req.ids)
        with self._lock, torch.inference_mode():
            logits = self.model.head(hidden).float()
        opts = req.options
        sampler = Sampler(opts, self.vocab_size, self.model.device)
        decoder = self.tokenizer.stream_decoder()
        stops = StopMatcher(tuple(opts.stop or ()))
        finish, stop_sequence, n = "length", None, 0
        while n < opts.max_tokens:
            token = sampler.next_token(logits)
            if token is None:
                finish = "eos"
                break
            n += 1
            delta, stop_sequence = stops.push(decoder.push(token))
            if delta:
                yield delta
            if stop_sequence is not None:
                finish = "stop"
                break
            if n < opts.max_tokens:
                with self._lock, torch.inference_mode():
                    out, state = self.model(self._tensor([token]), state, last_only=True)
                logits = out[0, -1]
        if stop_sequence is None:
            delta, stop_sequence = stops.push(decoder.flush())
            delta += "" if stop_sequence else stops.flush()
            if stop_sequence is not None:
                finish = "stop"
            if delta:
                yield delta
        text = stops.text[: stops.emitted]
        return Generation(text, finish, stop_sequence, len(req.ids), n, cached)

    # ---------------------------------------------------------------- scoring

    def score(self, prompt: str | Sequence[int], choices: Sequence[str]) -> ScoreResult:
        """Log-probability of each choice as the continuation of `prompt`, from one prefilled state.

        No sampling and no decode loop: the head runs only on the positions that predict a choice token
        (a single vector when every choice is one token). A text prompt ending in a non-space character
        and a choice starting with one are joined by a space, as the text would read ("Answer:" + "Yes"
        scores " Yes"); the choice's tokens are those of prompt+choice after the prompt's own tokens when
        the prompt's tokenisation is a prefix of it, otherwise the choice tokenised alone.
        """
        if isinstance(choices, str) or not choices:
            raise InputError("choices must be a non-empty list of strings")
        if len(set(choices)) != len(choices):
            raise InputError(f"duplicate choices: {list(choices)}")
        ids = self._prompt_ids(prompt)
        conts = [self._choice_ids(prompt, ids, c) for c in choices]
        state, hidden, cached = self._prefill(ids)
        with self._lock, torch.inference_mode():
            first = torch.log_softmax(self.model.head(hidden).float(), dim=-1)
            totals = [float(first[c[0]]) for c in conts]
            for length in sorted({len(c) for c in conts if len(c) > 1}):
                rows = [i for i, c in enumerate(conts) if len(c) == length]
                batch = torch.tensor([conts[i] for i in rows], device=self.model.device)
                out, _ = self.model.forward_hidden(batch[:, :-1], state.expand(len(rows)))
                logp = torch.log_softmax(self.model.head(out).float(), dim=-1)
                picked = logp.gather(-1, batch[:, 1:, None]).sum(dim=(1, 2))
                for i, value in zip(rows, picked.tolist()):
                    totals[i] += value
        logprobs = dict(zip(choices, totals))
        best = max(logprobs, key=logprobs.get)
        norm = torch.logsumexp(torch.tensor(totals, dtype=torch.float64), 0).item()
        return ScoreResult(best, math.exp(logprobs[best] - norm), logprobs, len(ids), cached)

    async def ascore(self, prompt: str | Sequence[int], choices: Sequence[str]) -> ScoreResult:
        return await asyncio.to_thread(self.score, prompt, choices)

    def _choice_ids(self, prompt: str | Sequence[int], ids: list[int], choice: str) -> list[int]:
        if not isinstance(choice, str) or not choice:
            raise InputError(f"choices must be non-empty strings, got {choice!r}")
        if not isinstance(prompt, str):
            return self._check_ids(self.encode(choice))
        text = " " + choice if not prompt[-1].isspace() and not choice[0].isspace() else choice
        joined = self.encode(prompt + text)
        if joined[: len(ids)] == ids and len(joined) > len(ids):
            return self._check_ids(joined[len(ids) :])
        return self._check_ids(self.encode(text))

    # ---------------------------------------------------------------- cache management

    def prewarm(self, prefixes: Sequence[str]) -> list[int]:
        """Prefill fixed prompt prefixes at start-up; returns how many tokens of each were cached.

        Only a prefix's stable tokens are prefilled (see `stable_prefix`); those snapshots are persisted
        when the engine has a cache directory.
        """
        counts = []
        for prefix in prefixes:
            ids = stable_prefix(self.tokenizer, prefix)
            if ids:
                self._prefill(self._check_ids(ids), persist_end=True)
            counts.append(len(ids))
        log.info("%s: pre-warmed %d prefix(es): %s tokens", self.name, len(counts), counts)
        return counts

    def prewarm_templates(
        self, templates: Sequence[str], variables: Sequence[str] = USER_VARIABLES
    ) -> list[int]:
        """Pre-warm Jinja-style prompt templates (e.g. a guardrails config's prompts): each is cut at its
        first per-request variable (`{{ user_input }}` ...) and its fixed text is prefilled."""
        return self.prewarm([template_prefix(t, variables) for t in templates])

    def cache_stats(self) -> dict[str, int]:
        return self.cache.stats().as_dict()
