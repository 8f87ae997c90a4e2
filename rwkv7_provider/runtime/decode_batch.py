"""The decode batch: every in-flight generation's state in one batch, advanced by one model call per token.

Live rows are [0, size). `step` runs `RWKV7.decode_step` (in place on the state) and the head for the live
rows and leaves their next-token logits in `logits`. How the state is stored depends on how steps run:

- eager (CPU, or CUDA without graphs): exactly `size` rows, contiguous (the CPU decode kernels need that);
  a request joining or leaving rebuilds the state once (a copy of the batch's state, not per token).
- CUDA graphs: static buffers of `max_rows` rows, captured once per batch-size bucket (powers of two up to
  the maximum batch); a step costs one graph launch instead of a few hundred kernel launches. Leaving rows
  are filled by moving the last live rows into their places, so a step always runs on a prefix of the
  buffers; rows of a bucket past `size` compute on stale data nobody reads (every op of the step is
  row-wise, so they cannot disturb the live rows).
"""

from __future__ import annotations

import logging
import time

import torch

from ..errors import ParameterError
from ..model import RWKV7, RWKV7State

log = logging.getLogger(__name__)


def buckets(max_rows: int) -> list[int]:
    """Batch sizes a graph is captured for: powers of two below `max_rows`, and `max_rows`."""
    sizes, b = [], 1
    while b < max_rows:
        sizes.append(b)
        b *= 2
    return [*sizes, max_rows]


def fill_holes(rows: list[int]) -> tuple[list[int], list[int], list[int]]:
    """Keeping `rows` (ascending) of a batch in place: (holes, movers, order). Row movers[i] moves into
    holes[i], so the kept rows end up as [0, len(rows)); order[j] is the old row of new row j."""
    k = len(rows)
    kept = set(rows)
    holes = [r for r in range(k) if r not in kept]
    movers = [r for r in rows if r >= k]
    order = list(range(k))
    for hole, mover in zip(holes, movers):
        order[hole] = mover
    return holes, movers, order


class DecodeBatch:
    """Rows of in-flight generations: state, next-token logits and fed token id per row."""

    def __init__(self, model: RWKV7, max_rows: int, graphs: bool = False) -> None:
        if graphs and model.device.type != "cuda":
            raise ParameterError("CUDA graphs need a model on a CUDA device")
        self.model, self.max_rows, self.graphs = model, max_rows, graphs
        self.size = 0
        self.state: RWKV7State | None = None  # eager: [L, size, ...]; graphs: [L, max_rows, ...]
        self.logits: torch.Tensor | None = None  # [capacity, V] float32
        self.ids: torch.Tensor | None = None  # [capacity] long: the tokens the next step feeds
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.capture_seconds: float | None = None

    @property
    def room(self) -> int:
        return self.max_rows - self.size

    def add(self, states: list[RWKV7State], hidden: torch.Tensor) -> None:
        """Append rows: batch-1 `states` (copied: they may be cached snapshots) and their last hidden [m, C]."""
        n, m = self.size, len(states)
        if n + m > self.max_rows:
            raise ValueError(f"decode batch full: {n + m} rows > {self.max_rows}")
        self._reserve(n + m)
        if self.graphs:
            for i, state in enumerate(states):
                for buffer, value in zip(self.state.tensors(), state.tensors()):
                    buffer[:, n + i].copy_(value[:, 0])
        else:
            self.state = RWKV7State.cat(([self.state] if n else []) + states)
        self.logits[n : n + m].copy_(self.model.head(hidden))
        self.size = n + m

    def keep(self, rows: list[int]) -> list[int]:
        """Keep these live rows (ascending) and drop the rest; returns, for each new row, its old row."""
        k = len(rows)
        if not self.graphs:
            if k < self.size:
                self.state = self.state.select(rows) if k else None
                index = torch.tensor(rows, dtype=torch.long).to(self.logits.device, non_blocking=True)
                self.logits[:k] = self.logits.index_select(0, index)
            self.size = k
            return rows
        holes, movers, order = fill_holes(rows)
        if holes:
            device = self.logits.device
            dst, src = (torch.tensor(x).to(device, non_blocking=True) for x in (holes, movers))
            for buffer in self.state.tensors():
                buffer.index_copy_(1, dst, buffer.index_select(1, src))
            self.logits.index_copy_(0, dst, self.logits.index_select(0, src))
        self.size = k
        return order

    def step(self, tokens: torch.Tensor) -> None:
        """Feed `tokens` [size] (device) to the live rows: their states advance, `logits` holds what follows."""
        n = self.size
        self.ids[:n].copy_(tokens)
        if self._graphs:
            self._graphs[next(b for b in self._graphs if b >= n)].replay()
        else:
            self._run(n)

    def _run(self, b: int) -> None:
        state = RWKV7State(*(t[:, :b] for t in self.state.tensors())) if self.graphs else self.state
        hidden = self.model.decode_step(self.ids[:b], state)
        self.logits[:b].copy_(self.model.head(hidden))

    def _reserve(self, rows: int) -> None:
        """Room for `rows` rows of logits and ids (and, with graphs, the static state and the graphs)."""
        capacity = 0 if self.logits is None else self.logits.shape[0]
        if rows <= capacity:
            return
        capacity = self.max_rows if self.graphs else min(self.max_rows, max(rows, 2 * capacity))
        logits = torch.zeros(capacity, self.model.config.vocab_size, device=self.model.device)
        if self.size:
            logits[: self.size].copy_(self.logits[: self.size])
        self.logits = logits
        self.ids = torch.zeros(capacity, dtype=torch.long, device=self.model.device)
        if self.graphs:
            self.state = self.model.zero_state(capacity)
            self._capture()

    def _capture(self) -> None:
        """One graph per bucket, sharing one memory pool (largest first, so the smaller ones fit in it).

        Runs before any row is live: the warm-up and capture runs only touch zero rows. Any failure falls
        back to eager steps with a warning, so serving goes on.
        """
        t0 = time.perf_counter()
        sizes = buckets(self.max_rows)
        try:
            side = torch.cuda.Stream(self.model.device)
            side.wait_stream(torch.cuda.current_stream(self.model.device))
            with torch.cuda.stream(side):  # warm-up: Triton compiles, cuBLAS picks kernels, allocator settles
                for b in sizes:
                    self._run(b)
            torch.cuda.current_stream(self.model.device).wait_stream(side)
            pool = torch.cuda.graph_pool_handle()
            graphs = {}
            for b in reversed(sizes):
                graph = torch.cuda.CUDAGraph()
                # thread_local: other threads (other engines, clients) may use the GPU meanwhile
                with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
                    self._run(b)
                graphs[b] = graph
            torch.cuda.synchronize(self.model.device)
        except Exception:  # eager steps still serve every request
            log.warning("CUDA graph capture failed; decoding with eager steps", exc_info=True)
            self.graphs = False
            return
        self._graphs = dict(sorted(graphs.items()))
        self.capture_seconds = time.perf_counter() - t0
        log.info("captured %d CUDA graphs of the decode step (batch %s) in %.1f s", len(sizes), sizes,
                 self.capture_seconds)
