"""Running a server inside a test: uvicorn in a thread on a free 127.0.0.1 port, stopped within seconds."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx
import uvicorn

from rwkv7_provider.server.app import create_app
from rwkv7_provider.server.config import ServerConfig


@contextmanager
def running(config: ServerConfig, *, ready_s: float = 180, headers: Mapping[str, str] | None = None,
            wrap=None) -> Iterator[str]:
    """The base URL (`http://127.0.0.1:PORT`) of `create_app(config)` once /healthz says ready.

    `wrap` may wrap the ASGI app (e.g. to record requests)."""
    app = create_app(config, response_headers=headers)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(wrap(app) if wrap else app, log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    try:
        deadline = time.monotonic() + ready_s
        while True:
            try:
                if httpx.get(f"{url}/healthz", headers=auth, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready in time"
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"
