"""What keeps one server healthy under load and hostile input.

- `Gate` (ASGI middleware, before routing): the API key on every request, the body size limit (413 before
  the body is parsed; a body without Content-Length is read up to the limit), extra response headers.
- `Admission`: at most `max_queue` requests in flight; more get 429 with Retry-After at once, so the backlog
  is bounded (the engine's scheduler batches what is admitted).
- `guarded`: one request's work, cancelled when the client disconnects or `request_timeout` passes (504).
  Cancelling the task cancels the engine request, which frees its batch slot.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .schema import APIError

T = TypeVar("T")
RETRY_AFTER_S = 1


class ClientGone(Exception):
    """The client disconnected before its answer was ready: the work was cancelled, nobody reads a reply."""


class Admission:
    """A bound on requests in flight (the event loop is one thread: a plain counter is enough)."""

    def __init__(self, limit: int, on_change: Callable[[int], None]) -> None:
        self.limit, self.active, self.on_change = limit, 0, on_change

    def acquire(self) -> Callable[[], None]:
        """Admit one request or raise 429; returns its release (idempotent)."""
        if self.active >= self.limit:
            raise APIError(429, f"the server has {self.limit} requests in flight (max_queue); retry shortly",
                           code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})
        self.active += 1
        self.on_change(self.active)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.active -= 1
                self.on_change(self.active)

        return release

    @contextmanager
    def slot(self) -> Iterator[None]:
        release = self.acquire()
        try:
            yield
        finally:
            release()


async def _disconnect(request: Request) -> None:
    """Returns when the client has gone (after the body was read, the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def guarded(request: Request, work: Awaitable[T], timeout: float) -> T:
    """`work`'s result, unless the client disconnects (`ClientGone`) or `timeout` seconds pass (504) first;
    either way the work is cancelled."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: nobody else will
    if watcher in done:
        raise ClientGone
    raise APIError(504, f"the request took longer than the server's request_timeout ({timeout:g} s)",
                   code="timeout")


class Gate:
    """API key, body size limit and extra response headers, in front of every route."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int,
                 headers: Mapping[str, str] | None = None) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
        self.api_key = api_key.encode() if api_key else None
        self.headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.headers:
            send = self._with_headers(send)
        request_headers = dict(scope["headers"])
        if self.api_key is not None and not self._authorized(request_headers):
            await respond(send, APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                         code="invalid_api_key"))
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            length = request_headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await respond(send, self._too_large())
                return
            body = await self._read(receive)
            if body is None:
                await respond(send, self._too_large())
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(b"authorization", b"")
        scheme, _, key = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(key.strip(), self.api_key or b"")

    def _too_large(self) -> APIError:
        return APIError(413, f"the request body is larger than the server's limit of {self.max_body_bytes} bytes",
                        code="request_too_large")

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None past the limit."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    def _with_headers(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        return wrapped


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body once, then the connection's own messages (so a disconnect is still seen)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def respond(send: Send, error: APIError) -> None:
    """An error response written straight to ASGI (the gate answers before any route)."""
    payload = json.dumps(error.body()).encode()
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
