"""Continuous batching: one thread at a time runs every model call of an engine, for all requests at once.

A request is a generator of steps (the engine's `_prefill_steps`, `_score_steps`, `_generate_steps`) that
yields the model work it needs and is resumed with the result:

    Forward(ids, state)       run tokens from a state (None = zero): -> (hidden, state after the tokens)
    [Forward, ...]            several at once: -> a list of results
    LogProbs(hidden, targets) log-softmax of the head, read at the target ids: -> lists of floats
    Join(state, hidden, s)    enter the decode batch, sampled by `s`: -> the first token (None: end of text)
    NEXT                      feed the last token: -> the next one (return from the generator to leave)
    Emit(text)                a streamed text delta for the client: -> None at once

Each iteration runs at most one batched prefill forward, one batched head for the scores that are ready
and one decode step for every generation in flight; requests join and leave between iterations. Prefill rows
start from different snapshots and have different lengths: they are right-padded (`forward_hidden(...,
lengths=)` packs them, so the padding costs no GEMM work, and leaves each row exact) and cut into pieces so
that one forward never holds more than `prefill_tokens` (padded) tokens: memory stays flat with prompt length.

Who runs the iterations: the process's one model thread (`model_thread.py`), for every caller and every
engine in turn: a synchronous `run` hands its request over and waits, as `submit` and `arun` do. One thread,
because on CPU each thread that runs torch keeps an OpenMP pool, and two live pools slow every op down (see
there).

Isolation: a request that raises, is cancelled (`Ticket.cancel`, a closed stream, a cancelled asyncio
task) or fails inside a batched forward (the rows are then retried one by one) leaves the batch; the
others go on.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import CancelledError  # a cancelled request: the standard exception, not an RWKV7Error
from dataclasses import dataclass, field
from typing import Any

import torch

from ..kernels import reads_packed
from ..model import RWKV7, RWKV7State
from .decode_batch import DecodeBatch
from .model_thread import MODEL_THREAD
from .sampling import END, Sampler, sample_batch

log = logging.getLogger(__name__)

# What one more forward call costs, in tokens of one row, when choosing how far to pad a prefill batch. On
# CPU a forward's fixed part (weights read once, per-op dispatch) costs what ~6 tokens do for the 4 x 128 guard
# and ~30 for the 0.1B shape; 32 errs towards fewer forwards. On a GPU a forward costs far more than padding.
FORWARD_COST_TOKENS = {"cpu": 32, "cuda": 4096}
PADDING_COST = 0.15  # a padded slot of a prefill batch, in tokens: only the WKV (~10-15% of a forward) runs padded
PACKED_OUTPUT_FACTOR = 4  # with a packed WKV: the padded [rows, T, C] hidden states a forward returns, per budget

Steps = Generator[Any, Any, Any]
_SCHEDULERS: weakref.WeakSet[Scheduler] = weakref.WeakSet()


@dataclass
class Forward:
    """Run `ids` from `state` (None: the zero state). Resumes with (hidden, state after the ids): hidden is
    the last position's [C], or every position's [T, C] with `every`."""

    ids: list[int]
    state: RWKV7State | None
    every: bool = False


@dataclass
class LogProbs:
    """Log-softmax of the head at `hidden` [n, C], read at `targets[i]` for row i; resumes with float lists.
    `vocab=False`: the raw logits of row i's targets instead, from the head's rows for those tokens alone (the
    caller normalises them over what it compares)."""

    hidden: torch.Tensor
    targets: list[list[int]]
    vocab: bool = True


@dataclass
class Join:
    """Enter the decode batch after a prefill; resumes with the first token (None: end of text)."""

    state: RWKV7State
    hidden: torch.Tensor
    sampler: Sampler


@dataclass
class Emit:
    """A text delta for a streaming client; the request resumes at once."""

    text: str


NEXT = "next"  # yielded by a generation in the decode batch: feed my last token, give me the next one


@dataclass
class SchedulerStats:
    """Counters since creation: model calls and the rows they served (tests assert that batching happened)."""

    forwards: int = 0
    forward_rows: int = 0
    max_forward_rows: int = 0
    decode_steps: int = 0
    decode_rows: int = 0
    max_decode_rows: int = 0
    logprob_calls: int = 0
    max_logprob_requests: int = 0
    requests: int = 0
    failed: int = 0
    cancelled: int = 0
    waits: int = 0  # times the model thread waited (up to max_wait) for a fuller batch


class Ticket:
    """One request: its steps (run on the model thread only) and what its client waits on (deltas, the result)."""

    def __init__(self, steps: Steps, stream: bool = False) -> None:
        self.steps = steps
        self.stream = stream
        self.cancelled = False  # set by the client, acted on by the model thread
        self._cond = threading.Condition(threading.Lock())
        self._deltas: deque[str] = deque()
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    # ---- model-thread side

    def emit(self, delta: str) -> None:
        if self.stream:
            with self._cond:
                self._deltas.append(delta)
                self._notify()

    def finish(self, value: Any) -> None:
        with self._cond:
            if not self._done:
                self._done, self._value = True, value
                self._notify()

    def fail(self, error: BaseException) -> None:
        with self._cond:
            if not self._done:
                self._done, self._error = True, error
                self._notify()

    def _notify(self) -> None:
        self._cond.notify_all()
        for loop, future in self._waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that event loop is closed: nobody is waiting any more
                pass
        self._waiters.clear()

    # ---- client side

    @property
    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        """Stop the request: it leaves the batch at the next iteration (no-op once finished)."""
        if not self._done:
            self.cancelled = True
            self.fail(CancelledError("request cancelled"))

    def wait(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._done)

    def result(self) -> Any:
        self.wait()
        return self._outcome()

    async def aresult(self) -> Any:
        await self._await(lambda: self._done)
        return self._outcome()

    def next_delta(self) -> str | None:
        """The next text delta, or None once the request has finished (raises its error)."""
        with self._cond:
            self._cond.wait_for(lambda: self._deltas or self._done)
            return self._pop()

    async def anext_delta(self) -> str | None:
        await self._await(lambda: self._deltas or self._done)
        with self._cond:
            return self._pop()

    def _pop(self) -> str | None:
        if self._deltas:
            return self._deltas.popleft()
        self._outcome()
        return None

    def _outcome(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    async def _await(self, ready: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                if ready():
                    return
                future = loop.create_future()
                self._waiters.append((loop, future))
            await future


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class _Job:
    """A Forward in progress: `pos` tokens done, the state after them, the hidden states kept so far."""

    ticket: Ticket
    work: Forward
    group: list | None = None  # the results list of a multi-Forward yield, shared by its jobs
    index: int = 0  # this job's place in `group`
    pos: int = 0
    state: RWKV7State | None = None
    last: torch.Tensor | None = None  # the last position's hidden so far
    every: list[torch.Tensor] = field(default_factory=list)  # all positions' hidden so far, with `every`


def piece_length(remaining: list[int], budget: int, forward_cost: int, padding_cost: float = PADDING_COST) -> int:
    """Tokens per row for one prefill forward over rows with `remaining` tokens each.

    A forward costs about `forward_cost` plus its real tokens plus `padding_cost` per padded slot (the model
    packs the rows for its GEMMs, so padding costs only its share of the WKV recurrence, and nothing where the
    WKV reads the rows packed: `kernels.reads_packed`). T is the candidate that finishes these rows cheapest,
    counting this forward and one more for what is left (rows longer than T continue there: the state carries
    over exactly), within the memory `budget`: rows * T tokens where the WKV runs padded; with a packed WKV, the
    real tokens, and the padded hidden states the forward returns at most PACKED_OUTPUT_FACTOR times that.
    """
    rows = len(remaining)
    if padding_cost:
        cap = max(1, budget // rows)
    else:
        cap = max(1, PACKED_OUTPUT_FACTOR * budget // rows)
        while cap > 1 and sum(min(r, cap) for r in remaining) > budget:
            cap = max(1, cap * budget // sum(min(r, cap) for r in remaining))

    def forward(lengths: list[int]) -> float:
        real = sum(lengths)
        return forward_cost + real + padding_cost * (len(lengths) * max(lengths) - real)

    def cost(length: int) -> float:
        rest = [r - length for r in remaining if r > length]
        return forward([min(r, length) for r in remaining]) + (forward(rest) if rest else 0)

    return min(sorted({min(r, cap) for r in remaining}), key=cost)


class Scheduler:
    """Runs requests' steps on one model in batches (see the module docstring)."""

    def __init__(
        self,
        model: RWKV7,
        *,
        max_batch_size: int,
        max_wait: float,
        prefill_tokens: int,
        cuda_graphs: bool = False,
        name: str = "rwkv7",
    ) -> None:
        self.model = model
        self.max_batch_size, self.max_wait, self.prefill_tokens = max_batch_size, max_wait, prefill_tokens
        self.name = name
        self.forward_cost = FORWARD_COST_TOKENS.get(model.device.type, FORWARD_COST_TOKENS["cuda"])
        self.padding_cost = 0.0 if reads_packed(model.device) else PADDING_COST
        self.stats = SchedulerStats()
        self.decode = DecodeBatch(model, max_batch_size, graphs=cuda_graphs)
        self._zero = model.zero_state(1)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._inbox: deque[Ticket] = deque()
        self._closing = False
        self._stopped = threading.Event()  # set by the model thread once a shut-down scheduler has failed its requests
        # owned by the model thread
        self._live: set[Ticket] = set()
        self._forwards: list[_Job] = []
        self._logprobs: list[tuple[Ticket, LogProbs]] = []
        self._joins: deque[tuple[Ticket, Join]] = deque()
        self._slots: list[tuple[Ticket, Sampler]] = []  # decode row -> its request
        self._stepping: set[Ticket] = set()  # while a decode step resumes its rows: their requests
        self._continuing: set[Ticket] = set()  # those of them that asked for another token
        self._last_served = 0
        _SCHEDULERS.add(self)

    # ---------------------------------------------------------------- client side

    def submit(self, steps: Steps, *, stream: bool = False) -> Ticket:
        """Queue a request for the model thread."""
        ticket = Ticket(steps, stream)
        with self._lock:
            self._enqueue(ticket)
        MODEL_THREAD.wake(self)
        return ticket

    def run(self, steps: Steps) -> Any:
        """Run a request on the model thread and wait for its result (raises the request's error); interrupting
        the wait (KeyboardInterrupt) cancels the request."""
        return self.run_all([steps])[0]

    def run_all(self, requests: Sequence[Steps]) -> list[Any]:
        """Run several requests together (queued at once, so the model thread batches them from its first
        iteration) and wait for all their results; the first error is raised once every request has ended, and
        interrupting the wait cancels those still running."""
        tickets = [Ticket(steps) for steps in requests]
        with self._lock:
            for ticket in tickets:
                self._enqueue(ticket)
        MODEL_THREAD.wake(self)
        try:
            for ticket in tickets:
                ticket.wait()
        except BaseException:
            for ticket in tickets:
                ticket.cancel()
            raise
        return [ticket.result() for ticket in tickets]

    async def arun(self, steps: Steps) -> Any:
        """Submit and await the result; cancelling the awaiting task cancels the request.

        The model thread is woken at the event loop's next turn, not at once: tasks started together (a `gather`,
        NeMo's parallel rails) all submit within one turn, so the first iteration sees every one of them,
        instead of running the first alone while the others queue behind it.
        """
        ticket = Ticket(steps)
        with self._lock:
            self._enqueue(ticket, wake=False)
        asyncio.get_running_loop().call_soon(self._deferred_wake)
        try:
            return await ticket.aresult()
        except asyncio.CancelledError:
            ticket.cancel()
            raise

    def _deferred_wake(self) -> None:
        """Wake the model thread for the requests `arun` queued. One call per request rather than one per turn:
        a flag shared by several event loops would strand the others' requests if the loop that set it stopped
        first; the later calls find the inbox taken and cost a lock each."""
        with self._lock:
            self._wake.notify_all()  # ends a wait for a fuller batch
            if not self._inbox:
                return
        MODEL_THREAD.wake(self)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop after the current iteration; requests still in flight fail. Runs at interpreter exit, so
        that the model thread is not inside a model call of this scheduler while the interpreter tears down."""
        with self._lock:
            self._closing = True
            self._wake.notify_all()
        MODEL_THREAD.wake(self)
        if threading.current_thread() is not MODEL_THREAD.thread:
            self._stopped.wait(timeout)

    def _enqueue(self, ticket: Ticket, wake: bool = True) -> None:
        if self._closing:
            raise RuntimeError(f"{self.name}: the engine's scheduler is shut down")
        self._inbox.append(ticket)
        if wake:
            self._wake.notify_all()

    # ---------------------------------------------------------------- iterations

    def step(self) -> bool:
        """One iteration if there is work (on the model thread, which calls this); whether work remains."""
        try:
            arrived = self._arrivals()
            if arrived is None:
                return False
            if arrived or self._busy():
                self._safe_iteration(arrived)
            with self._lock:
                return bool(self._inbox) or self._busy()
        except BaseException as e:  # e.g. the interpreter tearing down mid-iteration: fail the requests, never hang them
            self._reset(RuntimeError(f"{self.name}: the model thread stopped ({e!r})"))
            raise

    def _safe_iteration(self, arrived: list[Ticket]) -> None:
        try:
            self._iteration(arrived)
        except Exception as e:  # a fault of the scheduler itself: fail every request, never hang them
            log.exception("%s: scheduler iteration failed; failing the requests in flight", self.name)
            self._reset(e)

    def _busy(self) -> bool:
        """Work in flight, counting a request cancelled while it waited in no queue (between model calls): it
        still needs one iteration to leave `_live` and close its steps."""
        return bool(self._forwards or self._logprobs or self._joins or self._slots) or any(
            t.cancelled for t in self._live
        )

    def _arrivals(self) -> list[Ticket] | None:
        """New requests (possibly none while work is in flight); None once shut down.

        Right after an iteration that served several requests together (concurrent clients about to come
        back), wait up to `max_wait` for as many to arrive again; a lone client never waits.
        """
        with self._lock:
            if self._closing:
                self._stop()
                return None
            if not self._busy() and self._last_served > 1 and self.max_wait > 0:
                self.stats.waits += 1
                deadline = time.monotonic() + self.max_wait
                expected = min(self.max_batch_size, self._last_served)  # those just served may come back
                while len(self._inbox) < expected and not self._closing and (left := deadline - time.monotonic()) > 0:
                    self._wake.wait(left)
                self._last_served = 0  # waited once: what did not come back is not waited for again
            arrived = list(self._inbox)
            self._inbox.clear()
            return arrived

    def _stop(self) -> None:
        """Shut down (lock held): every queued or running request fails."""
        stopped = RuntimeError(f"{self.name}: the engine's scheduler was shut down")
        for ticket in self._inbox:
            ticket.fail(stopped)
        self._inbox.clear()
        self._reset(stopped)
        self._stopped.set()

    def _iteration(self, arrived: list[Ticket]) -> None:
        for ticket in arrived:
            self.stats.requests += 1
            self._live.add(ticket)
            self._advance(ticket, None)
        for ticket in [t for t in self._live if t.cancelled]:
            self.stats.cancelled += 1
            self._retire(ticket, None)
        served = 0  # requests sharing this iteration's busiest model call
        if self._forwards:
            served = max(served, self._forward_step())
        if self._logprobs:
            served = max(served, self._logprob_step())
        if self._joins or self._slots:
            served = max(served, self._decode_step())
        self._last_served = served

    def _advance(self, ticket: Ticket, value: Any) -> None:
        """Resume a request with `value` and queue the work it yields next (or deliver its result)."""
        if ticket.cancelled:  # cancelled since this iteration's check: it is in no queue now (a decode row it
            self._live.discard(ticket)  # holds is dropped by the decode step: it asks for no next token)
            self.stats.cancelled += 1
            ticket.steps.close()
            return
        try:
            item = ticket.steps.send(value)
            while isinstance(item, Emit):
                ticket.emit(item.text)
                item = ticket.steps.send(None)
        except StopIteration as done:
            self._live.discard(ticket)
            ticket.finish(done.value)
            return
        except Exception as e:  # noqa: BLE001 - the request's own error goes to its client only
            self._fail(ticket, e)
            return
        if isinstance(item, Forward):
            self._forwards.append(_Job(ticket, item, state=item.state))
        elif isinstance(item, list) and item:
            group: list = [None] * len(item)
            self._forwards += [_Job(ticket, w, group, i, state=w.state) for i, w in enumerate(item)]
        elif isinstance(item, list):
            self._advance(ticket, [])
        elif isinstance(item, LogProbs):
            self._logprobs.append((ticket, item))
        elif isinstance(item, Join):
            self._joins.append((ticket, item))
        elif item is NEXT and ticket in self._stepping:
            self._continuing.add(ticket)
        else:
            self._fail(ticket, RuntimeError(f"a request yielded {item!r}, which the scheduler cannot run"))

    def _fail(self, ticket: Ticket, error: BaseException) -> None:
        """A request that is in no queue (it has just been resumed) fails; a decode row it holds is
        dropped by the decode step, which sees it did not ask for another token."""
        self._live.discard(ticket)
        self.stats.failed += 1
        ticket.fail(error)
        ticket.steps.close()

    def _retire(self, ticket: Ticket, error: BaseException | None) -> None:
        """Remove a failed (`error`) or cancelled (None) request from every queue and the decode batch."""
        self._forwards = [j for j in self._forwards if j.ticket is not ticket]
        self._logprobs = [(t, w) for t, w in self._logprobs if t is not ticket]
        self._joins = deque((t, w) for t, w in self._joins if t is not ticket)
        rows = [r for r, (t, _) in enumerate(self._slots) if t is not ticket]
        if len(rows) < len(self._slots):
            order = self.decode.keep(rows)
            self._slots = [self._slots[r] for r in order]
        if error is not None:
            self._fail(ticket, error)
        else:
            self._live.discard(ticket)
            ticket.steps.close()

    def _reset(self, error: BaseException) -> None:
        for ticket in list(self._live):
            self._fail(ticket, error)
        self._forwards, self._logprobs, self._joins, self._slots = [], [], deque(), []
        self.decode.size = 0

    # ---------------------------------------------------------------- prefill

    def _forward_step(self) -> int:
        jobs = self._forwards[: self.max_batch_size]
        length = piece_length([len(j.work.ids) - j.pos for j in jobs], self.prefill_tokens, self.forward_cost,
                              self.padding_cost)
        pieces = [j.work.ids[j.pos : j.pos + length] for j in jobs]
        results = self._forward_or_error(pieces, [j.state for j in jobs])
        if len(jobs) > 1 and isinstance(results[0], Exception):  # find the rows at fault: rerun each alone
            results = [self._forward_or_error([p], [j.state])[0] for j, p in zip(jobs, pieces)]
        for job, result in zip(jobs, results):
            if isinstance(result, Exception) and job.ticket in self._live:
                self._retire(job.ticket, result)
        self.stats.forwards += 1
        self.stats.forward_rows += len(jobs)
        self.stats.max_forward_rows = max(self.stats.max_forward_rows, len(jobs))
        for job, piece, result in zip(jobs, pieces, results):
            if isinstance(result, Exception) or job.ticket not in self._live:
                continue
            hidden, job.state = result
            job.pos += len(piece)
            job.last = hidden[len(piece) - 1]
            if job.work.every:
                job.every.append(hidden[: len(piece)].clone())
            if job.pos == len(job.work.ids):
                self._forwards.remove(job)
                out = torch.cat(job.every) if job.work.every else job.last.clone()
                self._complete(job, (out, job.state))
        return len({id(job.ticket) for job in jobs})

    def _forward_or_error(self, pieces: list[list[int]], states: list[RWKV7State | None]) -> list:
        try:
            return self._forward(pieces, states)
        except Exception as e:  # noqa: BLE001 - the caller fails only the rows at fault
            return [e] * len(pieces)

    def _forward(self, pieces: list[list[int]], states: list[RWKV7State | None]) -> list:
        """One padded forward; per row (hidden [T, C], its own batch-1 state)."""
        device = self.model.device
        if len(pieces) == 1:
            hidden, state = self.model.forward_hidden(torch.tensor(pieces, device=device), states[0])
            return [(hidden[0], state)]
        width = max(map(len, pieces))
        ids = torch.tensor([p + [0] * (width - len(p)) for p in pieces], device=device)
        lengths = torch.tensor([len(p) for p in pieces], device=device)
        start = RWKV7State.cat([self._zero if s is None else s for s in states])
        hidden, state = self.model.forward_hidden(ids, start, lengths=lengths)
        return list(zip(hidden, state.rows()))

    def _complete(self, job: _Job, result: tuple) -> None:
        if job.group is None:
            self._advance(job.ticket, result)
            return
        job.group[job.index] = result
        if all(r is not None for r in job.group):
            self._advance(job.ticket, job.group)

    # ---------------------------------------------------------------- scores

    def _logprob_step(self) -> int:
        items, self._logprobs = self._logprobs, []
        for vocab in (True, False):
            group = [(t, w) for t, w in items if w.vocab is vocab]
            if not group:
                continue
            hidden = torch.cat([w.hidden.reshape(-1, w.hidden.shape[-1]) for _, w in group])
            targets = [row for _, w in group for row in w.targets]
            picked = (self._vocab_logprobs if vocab else self._target_logits)(hidden, targets)
            start = 0
            for ticket, work in group:
                rows = picked[start : start + len(work.targets)]
                start += len(work.targets)
                self._advance(ticket, [row[: len(t)] for row, t in zip(rows, work.targets)])
        self.stats.logprob_calls += 1
        self.stats.max_logprob_requests = max(self.stats.max_logprob_requests, len(items))
        return len(items)

    def _vocab_logprobs(self, hidden: torch.Tensor, targets: list[list[int]]) -> list[list[float]]:
        width = max(map(len, targets))
        index = torch.tensor([row + [0] * (width - len(row)) for row in targets], device=hidden.device)
        logp = torch.log_softmax(self.model.head(hidden).float(), dim=-1)
        return logp.gather(1, index).tolist()  # the one device-to-host copy for all of them

    def _target_logits(self, hidden: torch.Tensor, targets: list[list[int]]) -> list[list[float]]:
        tokens = sorted({t for row in targets for t in row})
        column = {t: i for i, t in enumerate(tokens)}
        logits = self.model.head_logits(hidden, torch.tensor(tokens, device=hidden.device)).tolist()
        return [[row[column[t]] for t in wanted] for row, wanted in zip(logits, targets)]

    # ---------------------------------------------------------------- decode

    def _decode_step(self) -> int:
        if self._joins and self.decode.room:
            joining = [self._joins.popleft() for _ in range(min(self.decode.room, len(self._joins)))]
            self.decode.add([j.state for _, j in joining], torch.stack([j.hidden for _, j in joining]))
            self._slots += [(t, j.sampler) for t, j in joining]
        n = len(self._slots)
        # Counted before the batch can empty: whoever sees it empty (and the engine idle) sees this step counted.
        self.stats.decode_steps += 1
        self.stats.decode_rows += n
        self.stats.max_decode_rows = max(self.stats.max_decode_rows, n)
        tokens, errors = sample_batch(self.decode.logits[:n], [s for _, s in self._slots])
        chosen = tokens.tolist()  # the step's one device-to-host copy
        self._continuing.clear()
        self._stepping = {t for t, _ in self._slots}
        for row, (ticket, _) in enumerate(list(self._slots)):
            if row in errors:
                self._fail(ticket, errors[row])
            else:
                self._advance(ticket, None if chosen[row] == END else chosen[row])
        self._stepping.clear()
        rows = [r for r, (t, _) in enumerate(self._slots) if t in self._continuing]
        if len(rows) < n:
            order = self.decode.keep(rows)
            self._slots = [self._slots[r] for r in order]
            if order != list(range(len(order))):  # rows moved: their tokens move with them
                tokens = tokens[torch.tensor(order).to(tokens.device, non_blocking=True)]
            tokens = tokens[: len(order)]
        if self._slots:
            try:
                self.decode.step(tokens)
            except Exception as e:  # noqa: BLE001 - the batch's states are undefined now: fail its requests
                for ticket, _ in list(self._slots):
                    self._retire(ticket, e)
        return n


@atexit.register
def _shutdown_all() -> None:
    for scheduler in list(_SCHEDULERS):
        scheduler.shutdown()
