"""The inference engine: one per (checkpoint, dtype, device), shared by every provider instance in a process.

Every prompt goes through the prefix state cache (`cache.py`): the engine resumes from the deepest stored
snapshot on the prompt's token path and prefills only the rest. When the prompt follows a recorded path
beyond that snapshot (a template shared with an earlier prompt), the prefill is split where the paths
diverge and a snapshot is stored there, so from the third request on a fixed template costs only the
tokens after it.

Threads and asyncio tasks may call one engine concurrently: model calls run under one lock (CPU torch is
multi-threaded already), each decode loop keeps its own state and takes the lock per step, and the async
methods run model work in worker threads.

Streaming: `stream()` returns a `StreamResult`, an iterator of text deltas whose `.generation` holds the
final `Generation` once it is exhausted; `astream()` returns the async counterpart, `AsyncStreamResult`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import string
import threading
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypedDict

import torch

from .cache import Match, PrefixCache, Snapshot, dtype_name, model_fingerprint
from .model import RWKV7, RWKV7State
from .model.checkpoint import resolve_checkpoint
from .model.tokenizer import Tokenizer, load_tokenizer
from .sampling import Sampler, SamplingParams

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "guard"  # the embedded guard model
DEFAULT_MAX_TOKENS = 256
DEFAULT_CACHE_SNAPSHOTS = 64  # default budget: this many snapshots of the model's state...
MAX_DEFAULT_CACHE_BYTES = 1 << 30  # ...but never more than 1 GiB
# Per-request template variables: the fixed prompt text ends at the first of these.
USER_VARIABLES = ("user_input", "bot_response", "bot_message", "user_message", "relevant_chunks", "history")
# Texts appended to a prefix to see which of its tokens do not depend on what follows (see `stable_prefix`).
# Every ASCII letter, digit and punctuation mark, whitespace, a few non-ASCII letters and common first words.
PROBES = (*string.ascii_letters, *string.digits, *string.punctuation, " ", "\n", "\t")
PROBES += ("é", "É", "你", "The", "the", "I", "What", "How", "Is", "Can", "Please", "You", "Hello")
_JINJA_TAG = re.compile(r"\{\{-?\s*(\w+)?[^}]*\}\}|\{%|\{#")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32}
_DTYPES |= {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
_DTYPES |= {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


class GenerateOptions(TypedDict, total=False):
    """Keyword options of generate / stream / agenerate / astream (see `SamplingParams` for sampling).

    None for any of them means its default (callers such as LangChain pass unset options as None).
    """

    max_tokens: int | None
    stop: str | Sequence[str] | None
    temperature: float
    top_p: float
    top_k: int
    presence_penalty: float
    frequency_penalty: float
    penalty_decay: float
    seed: int | None


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


class StreamResult(Iterator[str]):
    """Text deltas of one generation; `.generation` is available once the iterator is exhausted."""

    def __init__(self, deltas: Generator[str, None, Generation]) -> None:
        self._deltas = deltas
        self._generation: Generation | None = None

    def __next__(self) -> str:
        try:
            return next(self._deltas)
        except StopIteration as done:
            self._generation = self._generation or done.value  # a second exhaustion carries no value
            raise

    @property
    def generation(self) -> Generation:
        if self._generation is None:
            raise RuntimeError("the stream is not finished: iterate it to the end first")
        return self._generation

    def close(self) -> None:
        """Stop generating early (no Generation is produced)."""
        self._deltas.close()


class AsyncStreamResult(AsyncIterator[str]):
    """Async view of a `StreamResult`: each step runs in a worker thread, never on the event loop."""

    def __init__(self, stream: StreamResult) -> None:
        self._stream = stream

    async def __anext__(self) -> str:
        delta = await asyncio.to_thread(next, self._stream, None)
        if delta is None:
            raise StopAsyncIteration
        return delta

    @property
    def generation(self) -> Generation:
        return self._stream.generation

    async def aclose(self) -> None:
        self._stream.close()


class StopMatcher:
    """Cuts streamed text at the first stop string, holding back any tail that may still become one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.longest = max(map(len, stops), default=0)
        self.text = ""
        self.emitted = 0

    def push(self, delta: str) -> tuple[str, str | None]:
        """(text now safe to emit, the stop string found or None)."""
        start = max(0, len(self.text) - self.longest + 1)
        self.text += delta
        found = [(i, s) for s in self.stops if (i := self.text.find(s, start)) >= 0]
        if found:
            end, stop = min(found, key=lambda f: f[0])
            return self._emit(end), stop
        held = max((k for s in self.stops for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        return self._emit(len(self.text) - held), None

    def flush(self) -> str:
        return self._emit(len(self.text))

    def _emit(self, end: int) -> str:
        out = self.text[self.emitted : end]
        self.emitted = max(self.emitted, end)
        return out


@dataclass(frozen=True)
class _Request:
    ids: list[int]
    max_tokens: int
    stop: tuple[str, ...]
    sampling: SamplingParams


_SAMPLING_FIELDS = {f.name for f in fields(SamplingParams)}


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
            raise ValueError(f"snapshot_every must be >= 1 or None, got {snapshot_every}")
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
            raise ValueError("empty prompt")
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise ValueError(f"token id {bad} out of range for a vocabulary of {self.vocab_size}")
        return ids

    def _prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("empty prompt")
            return self._check_ids(self.encode(prompt))
        return self._check_ids(prompt)

    # ---------------------------------------------------------------- generation

    def generate(self, prompt: str | Sequence[int], **options: Unpack[GenerateOptions]) -> Generation:
        """Complete `prompt` (text or token ids); see `GenerateOptions` and `SamplingParams`."""
        return _drain(self.stream(prompt, **options))

    def stream(self, prompt: str | Sequence[int], **options: Unpack[GenerateOptions]) -> StreamResult:
        """Like `generate`, as text deltas: never half a UTF-8 character, never part of a stop string."""
        return StreamResult(self._decode(self._request(prompt, options)))

    async def agenerate(self, prompt: str | Sequence[int], **options: Unpack[GenerateOptions]) -> Generation:
        return await asyncio.to_thread(_drain, self.stream(prompt, **options))

    def astream(self, prompt: str | Sequence[int], **options: Unpack[GenerateOptions]) -> AsyncStreamResult:
        """`async for delta in engine.astream(...)`; arguments are checked here, before any model work."""
        return AsyncStreamResult(self.stream(prompt, **options))

    def _request(self, prompt: str | Sequence[int], options: dict) -> _Request:
        unknown = sorted(set(options) - GenerateOptions.__optional_keys__)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(map(repr, unknown))}")
        max_tokens = options.get("max_tokens")
        max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        stop = options.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        if not all(isinstance(s, str) and s for s in stop):
            raise ValueError(f"stop strings must be non-empty strings, got {stop!r}")
        sampling = SamplingParams(
            **{k: v for k, v in options.items() if k in _SAMPLING_FIELDS and v is not None}
        )
        return _Request(self._prompt_ids(prompt), max_tokens, stop, sampling)

    def _decode(self, req: _Request) -> Generator[str, None, Generation]:
        state, hidden, cached = self._prefill(req.ids)
        with self._lock, torch.inference_mode():
            logits = self.model.head(hidden).float()
        sampler = Sampler(req.sampling, self.vocab_size, self.model.device)
        decoder = self.tokenizer.stream_decoder()
        stops = StopMatcher(req.stop)
        finish, stop_sequence, n = "length", None, 0
        while n < req.max_tokens:
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
            if n < req.max_tokens:
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
            raise ValueError("choices must be a non-empty list of strings")
        if len(set(choices)) != len(choices):
            raise ValueError(f"duplicate choices: {list(choices)}")
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
            raise ValueError(f"choices must be non-empty strings, got {choice!r}")
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


def _drain(stream: StreamResult) -> Generation:
    for _ in stream:
        pass
    return stream.generation


def template_prefix(template: str, variables: Sequence[str] = USER_VARIABLES) -> str:
    """The text of `template` before its first per-request variable.

    Any other Jinja tag met first (a config constant, a loop) also ends the fixed part: its value is not
    known here. That case is logged, since it usually means the template should be rendered first.
    """
    m = _JINJA_TAG.search(template)
    if m is None:
        return template
    if m.group(1) not in variables:
        log.warning("template prefix cut at %r, which is not a per-request variable", m.group(0))
    return template[: m.start()]


def stable_prefix(tokenizer: Tokenizer, prefix: str) -> list[int]:
    """The tokens of `prefix` that stay the same whatever text follows it.

    A token may straddle the end of the prefix (`"` + `How` may merge into one token), so prefilling the
    prefix's own tokenisation could store a state that no real prompt passes through. The tokens shared by
    the tokenisations of prefix + several different probe texts are the ones every real prompt starts with.
    """
    if not prefix:
        return []
    runs = [tokenizer.encode(prefix + probe) for probe in PROBES]
    n = 0
    while all(n < len(r) for r in runs) and len({r[n] for r in runs}) == 1:
        n += 1
    return runs[0][:n]


# ---------------------------------------------------------------- process-wide registry


def resolve_model_path(model: str | Path = DEFAULT_MODEL) -> Path:
    """The checkpoint path for a model name: "default" is the embedded guard model, anything else a path."""
    if str(model) == DEFAULT_MODEL:
        if not (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
            raise FileNotFoundError(
                f"the embedded guard model is missing: expected {DEFAULT_MODEL_DIR / 'model.safetensors'} "
                "(reinstall rwkv7-provider, or pass model=<path to an RWKV-7 checkpoint>)"
            )
        return DEFAULT_MODEL_DIR
    return resolve_checkpoint(model).resolve()


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """torch dtype from a name as written in a config ("bf16", "float32", ...); None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}") from None


_ENGINES: dict[tuple[str, str, str], tuple[Engine, tuple]] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(
    model: str | Path = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    tokenizer: str | Path | Tokenizer | None = None,
    cache_bytes: int | None = None,
    cache_dir: str | Path | None = None,
) -> Engine:
    """The process-wide engine for (checkpoint, dtype, device), loading the weights on first use only.

    Later calls for the same key return the same engine whatever their tokenizer / cache arguments
    (a differing value is logged): one copy of the weights and one cache per checkpoint.
    """
    path = resolve_model_path(model)
    device = torch.device(device)
    wanted = parse_dtype(dtype) or (torch.float32 if device.type == "cpu" else None)
    key = (str(path), dtype_name(wanted) if wanted else "auto", str(device))
    settings = (tokenizer, cache_bytes, cache_dir)
    with _ENGINES_LOCK:
        if key in _ENGINES:
            engine, first = _ENGINES[key]
            if settings != first:
                log.warning("reusing the engine for %s: tokenizer and cache settings stay %s", path, first)
            return engine
        loaded = RWKV7.from_pretrained(path, dtype=wanted, device=device)
        tok = load_tokenizer(tokenizer, model_path=path, vocab_size=loaded.config.vocab_size)
        engine = Engine(loaded, tok, cache_bytes=cache_bytes, cache_dir=cache_dir, name=path.name)
        _ENGINES[key] = (engine, settings)
        log.info("engine for %s (%s, %s) ready", path, key[1], device)
        return engine
