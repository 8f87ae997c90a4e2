"""Streaming: text deltas that never end in half a character or part of a stop string.

`StopMatcher` cuts the text at the first stop string as soon as it appears, holding back any tail that may
still become one. `StreamResult` iterates the deltas of one request running in the engine's scheduler and
holds the final `Generation` once exhausted; `AsyncStreamResult` is its async view. Closing either (or
dropping it unfinished) cancels the request, which frees its place in the batch; so does cancelling the
asyncio task that waits on an `AsyncStreamResult`: a cancelled task keeps its frames (and so the stream)
alive through the exception's traceback, so the stream would otherwise decode on until collected.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Protocol

from .results import Generation


class DeltaSource(Protocol):
    """What a stream reads from (the scheduler's `Ticket`)."""

    def next_delta(self) -> str | None: ...  # None once finished; raises the request's error

    async def anext_delta(self) -> str | None: ...

    def result(self) -> Generation: ...

    def cancel(self) -> None: ...


class StreamResult(Iterator[str]):
    """Text deltas of one generation; `.generation` is available once the iterator is exhausted."""

    def __init__(self, source: DeltaSource) -> None:
        self._source = source
        self._generation: Generation | None = None
        self._closed = False
        weakref.finalize(self, source.cancel)  # an abandoned stream stops generating

    def __next__(self) -> str:
        delta = None if self._closed else self._source.next_delta()
        if delta is None:
            self._finished()
            raise StopIteration
        return delta

    def _finished(self) -> None:
        if not self._closed:
            self._generation = self._source.result()

    @property
    def generation(self) -> Generation:
        if self._generation is None:
            raise RuntimeError("the stream is not finished: iterate it to the end first")
        return self._generation

    def close(self) -> None:
        """Stop generating early (no Generation is produced); the request leaves the batch."""
        if self._generation is None:
            self._closed = True
            self._source.cancel()


class AsyncStreamResult(AsyncIterator[str]):
    """Async view of a `StreamResult`: waiting for a delta never blocks the event loop (no worker thread)."""

    def __init__(self, stream: StreamResult) -> None:
        self._stream = stream

    async def __anext__(self) -> str:
        stream = self._stream
        try:
            delta = None if stream._closed else await stream._source.anext_delta()
        except asyncio.CancelledError:  # the waiting task was cancelled: so is the request
            stream.close()
            raise
        if delta is None:
            stream._finished()
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
