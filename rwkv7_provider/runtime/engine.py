"""The inference engine: a model, its tokenizer and its prefix state cache, shared by every provider instance
on one checkpoint (see `registry.get_engine`).

Every prompt goes through the prefix state cache (`cache.py`): the engine resumes from the deepest stored
snapshot on the prompt's token path and prefills only the rest. When the prompt follows a recorded path
beyond that snapshot (a template shared with an earlier prompt), the prefill is split where the paths
diverge and a snapshot is stored there, so from the third request on a fixed template costs only the
tokens after it.

Threads and asyncio tasks may call one engine concurrently. Each request is written as a generator of
steps (`_prefill_steps`, `_score_steps`, `_generate_steps`: the per-request logic, in request order) and
run by the engine's `Scheduler`, which batches the model work of all requests in flight: one padded
forward for the prefills, one head for the scores, one decode step for every generation.
"""

from __future__ import annotations

import logging
import math
import operator
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError, ParameterError
from ..model import RWKV7, RWKV7State
from ..model.threads import off_thread
from ..model.tokenizer import Tokenizer
from .cache import Match, PrefixCache, Snapshot, model_fingerprint
from .options import GenerationOptions
from .results import Generation, ScoreResult, TokenLogprob
from .sampling import Sampler
from .scheduler import NEXT, Emit, Forward, Join, LogProbs, Scheduler, Steps
from .settings import EngineSettings
from .streaming import AsyncStreamResult, StopMatcher, StreamResult
from .structure import KnownTemplates
from .templates import USER_VARIABLES, stable_prefix, template_prefix

log = logging.getLogger(__name__)

DEFAULT_CACHE_SNAPSHOTS = 64  # default budget: this many snapshots of the model's state...
# A choice's tokens after a prompt (the prompt + choice tokenised, minus the prompt's tokens) depend only on the
# text around the join: byte-level BPE merges within a pre-token (a word, a run of punctuation), World's trie
# matches at most 128 bytes. So they are computed from the prompt's ending alone (its last characters, whose
# tokenisation must end in the prompt's own last tokens) and cached by ending and choice. A prompt rendered
# from a known template (`register_templates`) ends in that template's fixed tail (the question and
# "Answer:" after the user's text) when the tail is at least CHOICE_TAIL_CHARS long: that tail is the ending,
# the same in every check, so the choices' tokens are computed once per template and later checks tokenise
# only their prompt (a self-check's last 256 characters hold the user's new text: three extra tokenisations
# per check, 0.33 ms for the guard's tokenizer, beside 0.41 ms for its whole ~1,000-character prompt).
CHOICE_CONTEXT_CHARS, CHOICE_CONTEXT_TOKENS, CHOICE_CACHE_SIZE, CHOICE_TAIL_CHARS = 256, 8, 256, 32
MAX_DEFAULT_CACHE_BYTES = 1 << 30  # ...but never more than 1 GiB
# Requests per batched model call, and padded tokens per prefill forward (its activation memory), by device.
DEFAULT_MAX_BATCH_SIZE = {"cpu": 32, "cuda": 128}
DEFAULT_PREFILL_TOKENS = {"cpu": 1024, "cuda": 16384}


def logsumexp(values: list[float]) -> float:
    """log(sum(exp(v))) in float64 on the host: a check's few choices need no tensor (a tensor, an op and a
    copy back cost more than the rest of the check's Python on the model thread)."""
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


@dataclass(frozen=True)
class _Request:
    ids: list[int]
    options: GenerationOptions


class Engine:
    """A model, its tokenizer, its prefix cache and its batching scheduler. Build it directly (tests, custom
    models) or through `get_engine` (shared per checkpoint).

    Its settings are one `EngineSettings` (`settings=`) or its serving fields as keyword arguments
    (`Engine(model, tok, cache_bytes=0, max_wait=0.01)`), checked there; the fields applied when a checkpoint
    loads (`EngineSettings.LOADING`: dtype, device, quantize, ...) are refused here, the model being loaded
    already. `name` is how the model is named in logs and provider responses (`get_engine`: the checkpoint's).
    """

    def __init__(
        self,
        model: RWKV7,
        tokenizer: Tokenizer,
        settings: EngineSettings | None = None,
        *,
        name: str = "rwkv7",
        **kwargs: Any,
    ) -> None:
        if settings is None:
            loading = sorted(set(kwargs) & set(EngineSettings.LOADING))
            if loading:
                raise ParameterError(
                    f"{', '.join(loading)} apply when a checkpoint loads (get_engine, RWKV7.from_pretrained), "
                    "not to an Engine around a loaded model"
                )
            # the model's device decides the device rules (cuda_graphs needs a CUDA model)
            settings = EngineSettings.parse({"device": model.device.type, **kwargs})
        elif kwargs:
            raise ParameterError(f"pass settings= or keyword settings, not both (got {sorted(kwargs)} too)")
        device = model.device.type
        if torch.device(settings.device).type != device:
            raise ParameterError(f"the settings are for device {settings.device!r} but the model is on {model.device}")
        # the state buffers, the cache's fingerprint and persisted snapshots are torch work: off the caller's
        # thread, which then keeps no OpenMP pool to slow the scheduler's (see model/threads.py)
        off_thread(self._build, model, tokenizer, settings, name)

    def _build(self, model: RWKV7, tokenizer: Tokenizer, settings: EngineSettings, name: str) -> None:
        device = model.device.type
        self.settings = settings
        max_batch_size = settings.max_batch_size or DEFAULT_MAX_BATCH_SIZE.get(device, DEFAULT_MAX_BATCH_SIZE["cuda"])
        prefill_tokens = settings.prefill_tokens or DEFAULT_PREFILL_TOKENS.get(device, DEFAULT_PREFILL_TOKENS["cuda"])
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.min_junction_tokens = settings.min_junction_tokens
        self.snapshot_every = settings.snapshot_every
        self.max_prompt_tokens = settings.max_prompt_tokens
        self.vocab_size = model.config.vocab_size
        self._choice_cache: dict[tuple, list[int]] = {}  # see CHOICE_CONTEXT_CHARS
        self._choice_lock = threading.Lock()
        zero = Snapshot(
            model.zero_state(1), torch.zeros(model.config.n_embd, dtype=model.dtype, device=model.device)
        )
        cache_bytes = settings.cache_bytes
        if cache_bytes is None:
            cache_bytes = min(DEFAULT_CACHE_SNAPSHOTS * zero.nbytes, MAX_DEFAULT_CACHE_BYTES)
        self.fingerprint = model_fingerprint(model)
        self.cache = PrefixCache(
            fingerprint=self.fingerprint,
            dtype=model.dtype,
            budget_bytes=cache_bytes,
            expected={k: (tuple(t.shape), t.dtype) for k, t in zero.tensors().items()},
            device=model.device,
            directory=settings.cache_dir,
            vocab_size=self.vocab_size,
        )
        # Templates whose user spans the classifier answer path scores as data (see structure.py).
        self.templates = KnownTemplates()
        # A known template's fixed text -> (where it may be cut, the tokens before the cut): see `encode`.
        self._fixed_tokens: dict[str, tuple[int, list[int]]] = {}
        self.scheduler = Scheduler(
            self.model,
            max_batch_size=max_batch_size,
            max_wait=settings.max_wait,
            prefill_tokens=prefill_tokens,
            cuda_graphs=device == "cuda" if settings.cuda_graphs is None else settings.cuda_graphs,
            name=name,
        )

    # ---------------------------------------------------------------- prompt + prefill

    def encode(self, text: str) -> list[int]:
        """The tokens of `text`. A prompt rendered from a known template (`register_templates`) reuses the
        tokens of the template's fixed text up to where the tokenizer proves a cut exact (`Tokenizer.boundary`),
        so a rail check tokenises only the user's text and what follows it (the guard's prompt: ~50 of ~170
        tokens; tokenising all of it was a tenth of a warm check)."""
        best = max(((cut, ids) for prefix, (cut, ids) in self._fixed_tokens.items() if text.startswith(prefix)),
                   key=lambda known: known[0], default=None)
        if best is None:
            return self.tokenizer.encode(text)
        cut, ids = best
        return ids + self.tokenizer.encode(text[cut:])

    def prefill(self, token_ids: Sequence[int]) -> tuple[RWKV7State, torch.Tensor]:
        """(state after the tokens, last-position logits [V] float32), through the cache.

        Both are shared with the cache: read them, never modify them in place (clone first).
        """
        state, hidden, _ = self.scheduler.run(self._prefill_steps(self._check_ids(token_ids)))
        with torch.inference_mode():
            return state, self.model.head(hidden).float()

    def _prefill_steps(self, ids: list[int], *, prewarm: bool = False) -> Steps:
        """-> (state, last hidden [C], tokens served from cache). Stores snapshots at the divergence point,
        every `snapshot_every` tokens and at the end."""
        match: Match = self.cache.lookup(ids)
        snapshot, start = match.snapshot, match.depth
        if start == len(ids):
            if prewarm:  # pre-warming a prefix that traffic already cached
                self.cache.insert(ids, persist=True, pin=True)
            return snapshot.state, snapshot.hidden, start
        state = snapshot.state if snapshot else None
        for cut in self._cuts(start, match.shared, len(ids)):
            hidden, state = yield Forward(ids[start:cut], state)
            end = cut == len(ids)
            self.cache.insert(ids[:cut], Snapshot(state, hidden), persist=prewarm or not end, pin=prewarm and end)
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

    def _check_ids(self, token_ids: Sequence[int]) -> list[int]:
        """Token ids as a list of ints: an ordered sequence (list, tuple, numpy array) of ints (numpy / 0-d
        tensor ints too) or a 1-D integer tensor; never bools, floats, text or bytes (iterating bytes would give
        ints that were never token ids), nor a set (no order) or a generator (read once, by whoever asks first)."""
        ordered = isinstance(token_ids, (Sequence, torch.Tensor)) or hasattr(token_ids, "__array__")
        if isinstance(token_ids, (str, bytes, bytearray, memoryview)) or not ordered:
            raise InputError(
                "a prompt is a str or an ordered sequence of int token ids (list, tuple, 1-D tensor or array), "
                f"got {type(token_ids).__name__}"
            )
        if isinstance(token_ids, torch.Tensor) and (
            token_ids.dim() != 1 or token_ids.dtype.is_floating_point or token_ids.dtype.is_complex
            or token_ids.dtype == torch.bool
        ):
            raise InputError(f"token ids must be a 1-D integer tensor, got {token_ids.dtype} {tuple(token_ids.shape)}")
        ids = []
        for t in token_ids.tolist() if isinstance(token_ids, torch.Tensor) else token_ids:
            try:
                if isinstance(t, bool):
                    raise TypeError
                ids.append(operator.index(t))
            except TypeError:
                raise InputError(f"token ids must be ints, got {t!r} ({type(t).__name__})") from None
        if not ids:
            raise InputError("empty prompt")
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise InputError(f"token id {bad} out of range for a vocabulary of {self.vocab_size}")
        if self.max_prompt_tokens is not None and len(ids) > self.max_prompt_tokens:
            raise InputError(
                f"the prompt is {len(ids)} tokens, more than max_prompt_tokens={self.max_prompt_tokens} "
                "(an engine / provider parameter: raise it, or shorten the prompt)"
            )
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
        return self.scheduler.run(self._generate_steps(self._request(prompt, options, kwargs)))

    def stream(
        self, prompt: str | Sequence[int], options: GenerationOptions | None = None, **kwargs: Any
    ) -> StreamResult:
        """Like `generate`, as text deltas: never half a UTF-8 character, never part of a stop string.

        The request starts at once; close the stream (or drop it) to cancel it."""
        steps = self._generate_steps(self._request(prompt, options, kwargs))
        return StreamResult(self.scheduler.submit(steps, stream=True))

    async def agenerate(
        self, prompt: str | Sequence[int], options: GenerationOptions | None = None, **kwargs: Any
    ) -> Generation:
        """`generate` without blocking the event loop; cancelling the task cancels the request."""
        return await self.scheduler.arun(self._generate_steps(self._request(prompt, options, kwargs)))

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

    def _generate_steps(self, req: _Request) -> Steps:
        """-> Generation; the text deltas are emitted as they become safe to show."""
        state, hidden, cached = yield from self._prefill_steps(req.ids)
        opts = req.options
        decoder = self.tokenizer.stream_decoder()
        stops = StopMatcher(tuple(opts.stop or ()))
        finish, stop_sequence, n = "length", None, 0
        sampler = Sampler(opts, self.vocab_size, self.model.device)
        logprobs: list[TokenLogprob] | None = None if opts.logprobs is None else []
        token = yield Join(state, hidden, sampler)
        while True:
            if token is None:
                finish = "eos"
                break
            n += 1
            if logprobs is not None:
                logprobs.append(self._token_logprob(token, len(stops.text), sampler))
            delta, stop_sequence = stops.push(decoder.push(token))
            if delta:
                yield Emit(delta)
            if stop_sequence is not None:
                finish = "stop"
                break
            if n == opts.max_tokens:
                break
            token = yield NEXT
        if stop_sequence is None:
            delta, stop_sequence = stops.push(decoder.flush())
            delta += "" if stop_sequence else stops.flush()
            if stop_sequence is not None:
                finish = "stop"
            if delta:
                yield Emit(delta)
        text = stops.text[: stops.emitted]
        if logprobs is not None:  # the tokens of the text returned (not those of a stop string after it)
            logprobs = [t for t in logprobs if t.offset < len(text)]
        return Generation(text, finish, stop_sequence, len(req.ids), n, cached,
                          None if logprobs is None else tuple(logprobs))

    def _token_logprob(self, token: int, offset: int, sampler: Sampler) -> TokenLogprob:
        """The `logprobs` entry of a generated token, from what its sampler noted when drawing it."""
        logprob, alternatives = sampler.noted

        def described(token_id: int) -> tuple[str, bytes]:
            raw = self.tokenizer.token_bytes(token_id)
            return raw.decode("utf-8", errors="replace"), raw

        top = tuple((*described(t), lp) for t, lp in alternatives)
        return TokenLogprob(token, *described(token), logprob, offset, top)

    # ---------------------------------------------------------------- scoring

    def score(self, prompt: str | Sequence[int], choices: Sequence[str], *, over_choices: bool = False) -> ScoreResult:
        """Log-probability of each choice as the continuation of `prompt`, from one prefilled state.

        No sampling and no decode loop: the head runs only on the positions that predict a choice token
        (a single vector when every choice is one token). A text prompt ending in a non-space character
        and a choice starting with one are joined by a space, as the text would read ("Answer:" + "Yes"
        scores " Yes"); the choice's tokens are those of prompt+choice after the prompt's own tokens when
        the prompt's tokenisation is a prefix of it, otherwise the choice tokenised alone.

        `over_choices=True`: `logprobs` are normalised over the choices instead of the whole vocabulary (what a
        classifier reads; `probability` is the same either way). When every choice is one token, the head then
        computes only the choices' rows, so a check stops paying for the vocabulary-wide head.
        """
        return self.scheduler.run(self._score_request(prompt, choices, over_choices))

    def score_all(self, prompts: Sequence[str | Sequence[int]], choices: Sequence[str], *,
                  over_choices: bool = False) -> list[ScoreResult]:
        """`score` for several prompts at once, batched together (one round of model calls, not one per prompt:
        what `ascore` under `asyncio.gather` gets, for a synchronous caller)."""
        return self.scheduler.run_all([self._score_request(p, choices, over_choices) for p in prompts])

    async def ascore(self, prompt: str | Sequence[int], choices: Sequence[str], *,
                     over_choices: bool = False) -> ScoreResult:
        """`score` without blocking the event loop; cancelling the task cancels the request."""
        return await self.scheduler.arun(self._score_request(prompt, choices, over_choices))

    def _score_request(self, prompt: str | Sequence[int], choices: Sequence[str], over_choices: bool) -> Steps:
        """The checked arguments' steps (checked here, in the caller's thread, before any model work)."""
        if isinstance(choices, str) or not choices:
            raise InputError("choices must be a non-empty list of strings")
        if len(set(choices)) != len(choices):
            raise InputError(f"duplicate choices: {list(choices)}")
        ids = self._prompt_ids(prompt)
        conts = self._choices_ids(prompt, ids, choices)
        return self._score_steps(ids, list(choices), conts, over_choices)

    def _score_steps(self, ids: list[int], choices: list[str], conts: list[list[int]], over_choices: bool) -> Steps:
        """-> ScoreResult."""
        state, hidden, cached = yield from self._prefill_steps(ids)
        longer = [c for c in conts if len(c) > 1]
        outs = (yield [Forward(c[:-1], state, every=True) for c in longer]) if longer else []
        rows = torch.cat([hidden[None], *(out for out, _ in outs)]) if outs else hidden[None]
        targets = [[c[0] for c in conts]] + [[t] for c in longer for t in c[1:]]
        # One-token choices scored over themselves need only their logits (normalised below), not the whole head.
        values = yield LogProbs(rows, targets, vocab=bool(longer) or not over_choices)
        totals, later = list(values[0]), iter(values[1:])
        for i, c in enumerate(conts):
            totals[i] += sum(next(later)[0] for _ in c[1:])
        norm = logsumexp(totals)
        if over_choices:
            totals = [t - norm for t in totals]
            norm = 0.0
        logprobs = dict(zip(choices, totals))
        best = max(logprobs, key=logprobs.get)
        return ScoreResult(best, math.exp(logprobs[best] - norm), logprobs, len(ids), cached)

    def _choices_ids(self, prompt: str | Sequence[int], ids: list[int], choices: Sequence[str]) -> list[list[int]]:
        """Each choice's tokens after the prompt (see CHOICE_CONTEXT_CHARS); the prompt's ending is tokenised
        at most once, for all of them."""
        for choice in choices:
            if not isinstance(choice, str) or not choice:
                raise InputError(f"choices must be non-empty strings, got {choice!r}")
        if not isinstance(prompt, str):
            return [self._check_ids(self.encode(choice)) for choice in choices]
        ending = (self.templates.tail(prompt, CHOICE_TAIL_CHARS) or prompt)[-CHOICE_CONTEXT_CHARS:]
        ending_ids: list[int] | None = None
        conts = []
        for choice in choices:
            text = " " + choice if not prompt[-1].isspace() and not choice[0].isspace() else choice
            key = (ending, tuple(ids[-CHOICE_CONTEXT_TOKENS:]), text)
            with self._choice_lock:
                cont = self._choice_cache.get(key)
            if cont is None:  # from the ending alone
                if ending_ids is None:
                    ending_ids = self.encode(ending)
                cont = self._continuation(ending, ending_ids, ids, text)
                if cont is None:
                    cont = self._continuation(prompt, ids, ids, text) or self._check_ids(self.encode(text))
                with self._choice_lock:
                    self._choice_cache[key] = cont
                    if len(self._choice_cache) > CHOICE_CACHE_SIZE:
                        self._choice_cache.pop(next(iter(self._choice_cache)))
            conts.append(cont)
        return conts

    def _continuation(self, context: str, context_ids: list[int], ids: list[int], text: str) -> list[int] | None:
        """The tokens `text` adds after `context` (context + text tokenised, minus `context_ids`), if
        `context_ids` end like the prompt's `ids` and are a prefix of that tokenisation; else None."""
        if context_ids[-CHOICE_CONTEXT_TOKENS:] != ids[-CHOICE_CONTEXT_TOKENS:]:
            return None
        joined = self.encode(context + text)
        if joined[: len(context_ids)] != context_ids or len(joined) == len(context_ids):
            return None
        return self._check_ids(joined[len(context_ids) :])

    # ---------------------------------------------------------------- cache management

    def prewarm(self, prefixes: Sequence[str]) -> list[int]:
        """Prefill fixed prompt prefixes at start-up; returns how many tokens of each were cached.

        Only a prefix's stable tokens are prefilled (see `stable_prefix`); those snapshots are pinned (never
        evicted: the configured prompts are few and always wanted) and persisted when the engine has a cache
        directory.
        """
        counts = []
        for prefix in prefixes:
            ids = stable_prefix(self.tokenizer, prefix)
            if ids:
                self.scheduler.run(self._prefill_steps(self._check_ids(ids), prewarm=True))
            counts.append(len(ids))
        log.info("%s: pre-warmed %d prefix(es): %s tokens", self.name, len(counts), counts)
        return counts

    def prewarm_templates(
        self, templates: Sequence[str], variables: Sequence[str] = USER_VARIABLES
    ) -> list[int]:
        """Pre-warm Jinja-style prompt templates (e.g. a guardrails config's prompts): each is cut at its
        first per-request variable (`{{ user_input }}` ...) and its fixed text is prefilled. The templates are
        also registered (`register_templates`): these are the prompts the engine's users will send."""
        self.register_templates(templates)
        return self.prewarm([template_prefix(t, variables) for t in templates])

    def register_templates(self, templates: Sequence[str]) -> int:
        """Make templates known to the classifier answer path (`RWKV7Client` with `choices`), which scores the
        user's text in a prompt rendered from one of them as data (`structure.py`); `score` itself stays
        literal, and lets `encode` reuse the tokens of their fixed text. Returns how many templates are known."""
        fixed = dict(self._fixed_tokens)
        for template in templates:
            prefix = template_prefix(template)
            if prefix not in fixed and (cut := self.tokenizer.boundary(prefix)):
                fixed[prefix] = (cut, self.tokenizer.encode(prefix[:cut]))
        self._fixed_tokens = fixed  # replaced whole: callers on other threads read it without a lock
        return self.templates.register(templates)

    def cache_stats(self) -> dict[str, int]:
        return self.cache.stats().as_dict()
