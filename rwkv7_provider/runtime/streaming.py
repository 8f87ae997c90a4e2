"""Streaming: text deltas that never end in half a character or part of a stop string.

`StopMatcher` cuts the text at the first stop string as soon as it appears, holding back any tail that may
still become one. `StreamResult` is an iterator of deltas whose `.generation` holds the final `Generation`
once it is exhausted; `AsyncStreamResult` is its async view.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator, Iterator

from .results import Generation


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


def drain(stream: StreamResult) -> Generation:
    for _ in stream:
        pass
    return stream.generation
