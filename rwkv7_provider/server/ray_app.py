"""The server on Ray Serve: N replicas of `create_app(config)` behind one endpoint.

    rwkv7-provider serve --replicas 2                          # a local Ray cluster, Ray's routing
    rwkv7-provider serve --replicas 2 --routing affinity       # prompts go to the replica holding their prefix
    rwkv7-provider serve --replicas 4 --ray-address auto       # a cluster started with `ray start --head`
    serve run rwkv7_provider.server.ray_app:build replicas=2 config=models.yaml
    serve deploy deploy/serve_config.yaml                      # the same builder from a Ray Serve config file

Each `RWKV7Replica` is a Ray Serve replica running the unchanged FastAPI app of `rwkv7-provider serve`, with
its own engines (one per served model) and `threads` torch threads: by default the CPUs Ray reserved for it
(`num_cpus`, which defaults to this node's cores divided by the replicas). Every response carries the
`x-rwkv7-replica` header and `GET /v1/replica` describes the replica (id, process id, its cache at start).

Routing (`routing=`):
- `default`: the replicas are the HTTP entry point, routed by Ray's default (power of two choices).
- `affinity`: a light `Front` deployment is the HTTP entry point. It reads each request's body and calls the
  replicas through a handle routed by `ray_router.PrefixAffinityRouter`, which sends a prompt to the replica
  that was sent its prefix (a rail's policy text, a system prompt), unless that replica is busy. Ray's HTTP
  proxy cannot do this itself: its router sees the request's headers, not its body. It costs a hop (one
  more process per request); bench/bench_replicas.py measures what it buys (README, "Scale out").

Faults: Ray restarts a replica whose process dies; a request that was on it gets a 500 from Ray's proxy, or a
503 with Retry-After from the `Front` (the `openai` client retries both). Warm starts: with a shared `cache_dir`, a new replica loads the
persisted prefix states instead of prefilling its prompts again (the files are written atomically).

This module imports Ray: only the `[ray]` extra needs it, and nothing else in the package imports this module.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import ray
import torch
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.config import RequestRouterConfig
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.types import Message, Receive, Scope, Send

from ..errors import ParameterError
from ..runtime.options import format_errors
from ..runtime.registry import default_threads
from .affinity import DEFAULT_IMBALANCE, DEFAULT_MIN_MATCH, inspect_request
from .app import create_app
from .config import ServerConfig, build_config, default_model, load_config
from .limits import Gate, respond
from .ray_router import PrefixAffinityRouter
from .schema import APIError

log = logging.getLogger(__name__)

APP_NAME = "rwkv7"
REPLICA_HEADER = "x-rwkv7-replica"
# Requests one replica works on at once: what its engine batches on CPU (DEFAULT_MAX_BATCH_SIZE).
MAX_ONGOING_REQUESTS = 32
Routing = Literal["default", "affinity"]


@dataclass(frozen=True)
class ForwardedRequest:
    """An HTTP request as the `Front` hands it to a replica; `routing_text` is what the router reads."""

    method: str
    path: str
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    client: tuple[str, int] | None
    body: bytes
    routing_text: str

    def scope(self) -> Scope:
        return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                "method": self.method, "scheme": "http", "path": self.path, "raw_path": self.path.encode(),
                "query_string": self.query_string, "root_path": "", "headers": self.headers,
                "client": self.client, "server": None, "state": {}}


def replica_config(config: ServerConfig, threads: int, cache_dir: str | None) -> ServerConfig:
    """`config` with `threads` (and a shared `cache_dir`) for every served model that sets none itself."""
    models = []
    for served in config.models:
        update: dict[str, Any] = {}
        if served.settings.threads is None:
            update["threads"] = threads
        if cache_dir and served.settings.cache_dir is None:
            update["cache_dir"] = cache_dir
        models.append(served.model_copy(update={"settings": served.settings.model_copy(update=update)}))
    return config.model_copy(update={"models": models})


def assigned_threads() -> int:
    """The CPUs Ray reserved for this replica (its `num_cpus`), or half the usable cores without one."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
    return max(1, int(cpus)) if cpus else default_threads()


class RWKV7Replica:
    """One replica: the app of `rwkv7-provider serve` with its engines, loaded before Ray routes to it.

    Deployed as Ray's HTTP ingress itself (`routing="default"`), or behind the `Front` (`forward`): Ray allows
    one FastAPI ingress per application."""

    async def __init__(self, config: ServerConfig, threads: int | None = None, cache_dir: str | None = None) -> None:
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        threads = threads or assigned_threads()
        self.asgi = create_app(replica_config(config, threads, cache_dir),
                               response_headers={REPLICA_HEADER: self.replica_id})
        self.service = self.asgi.state.service
        t0 = time.perf_counter()
        await asyncio.to_thread(self.service.load)  # the constructor's end is when Ray starts routing here
        self.info = {"replica": self.replica_id, "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                     "threads": torch.get_num_threads(), "load_seconds": round(time.perf_counter() - t0, 3),
                     "cache_at_start": {name: client.engine.cache_stats()
                                        for name, client in self.service.clients.items()}}
        self.asgi.add_api_route("/v1/replica", self.describe, methods=["GET"])
        log.info("replica %s (pid %d, %d threads) ready", self.replica_id, os.getpid(), torch.get_num_threads())

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self.asgi

    async def describe(self) -> dict[str, Any]:
        """`GET /v1/replica`: which replica answered, its process, threads, and its prefix cache right after
        start (`tokens_computed` 0 with `snapshots` > 0: a warm start from the shared cache_dir)."""
        return self.info

    def check_health(self) -> None:
        if self.service.status == "failed":
            raise RuntimeError(f"the served models failed: {self.service.error}")

    async def forward(self, request: ForwardedRequest) -> list[Message]:
        """Run one forwarded HTTP request through the app; its ASGI messages, all at once (one Ray call:
        cheaper than a stream for the usual whole-JSON answer)."""
        return [message async for batch in self.forward_stream(request) for message in batch]

    async def forward_stream(self, request: ForwardedRequest) -> AsyncIterator[list[Message]]:
        """Run one forwarded HTTP request through the app, streaming its ASGI messages back (batched: what
        is ready is sent together). Cancelled by the caller, the app sees the client disconnect."""
        messages: asyncio.Queue[Message | None] = asyncio.Queue()
        gone = asyncio.Event()
        body_read = False

        async def receive() -> Message:
            nonlocal body_read
            if not body_read:
                body_read = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            messages.put_nowait(message)

        task = asyncio.create_task(self.asgi(request.scope(), receive, send))
        task.add_done_callback(lambda _: messages.put_nowait(None))
        try:
            finished = False
            while not finished and (first := await messages.get()) is not None:
                batch = [first]
                while not messages.empty():
                    message = messages.get_nowait()
                    if message is None:
                        finished = True
                        break
                    batch.append(message)
                yield batch
            task.result()
        finally:
            gone.set()
            if not task.done():
                task.cancel()


REPLICA_OPTIONS: dict[str, Any] = {"name": "RWKV7Replica", "max_ongoing_requests": MAX_ONGOING_REQUESTS,
                                   "health_check_period_s": 5}
Replica = serve.deployment(RWKV7Replica, **REPLICA_OPTIONS)
IngressReplica = serve.deployment(serve.ingress()(RWKV7Replica), **REPLICA_OPTIONS)


@serve.deployment(max_ongoing_requests=4096, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Front:
    """The HTTP entry point of `routing="affinity"`: API key and body limit (the replica checks them again),
    then the request goes to a replica chosen by `PrefixAffinityRouter` and its response comes back."""

    def __init__(self, replicas: DeploymentHandle, config: ServerConfig) -> None:
        self.whole = replicas.options(method_name="forward")
        self.streamed = replicas.options(stream=True, method_name="forward_stream")
        self.config = config

    def __serve_build_asgi_app__(self) -> Starlette:
        return Starlette(routes=[Mount("/", app=self.relay)], middleware=[
            Middleware(Gate, api_key=self.config.api_key, max_body_bytes=self.config.max_body_bytes)])

    async def relay(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        path, root = scope["path"], scope.get("root_path", "")
        path = path[len(root):] or "/" if root and path.startswith(root) else path
        routed = inspect_request(path, body)
        request = ForwardedRequest(scope["method"], path, scope.get("query_string", b""), list(scope["headers"]),
                                   scope.get("client"), body, routed.text)
        started = False
        try:
            if routed.stream:
                async for batch in self.streamed.remote(request):
                    for message in batch:
                        started = started or message["type"] == "http.response.start"
                        await send(message)
            else:
                for message in await self.whole.remote(request):
                    await send(message)
        except BackPressureError:
            await respond(send, APIError(429, f"{self.config.max_queue} requests are waiting for a replica "
                                         "(max_queue); retry shortly", code="queue_full",
                                         headers={"Retry-After": "1"}))
        except RayActorError as e:
            if started:
                raise
            log.warning("the replica serving %s %s stopped (%s): answering 503", scope["method"], path,
                        type(e).__name__)
            await respond(send, APIError(503, "the replica serving this request stopped; retry (Ray replaces it "
                                         "and another replica takes the retry)", code="replica_unavailable",
                                         headers={"Retry-After": "1"}))


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def build_app(config: ServerConfig, *, replicas: int = 1, routing: Routing = "default", threads: int | None = None,
              num_cpus: float | None = None, cache_dir: str | None = None, min_match: float = DEFAULT_MIN_MATCH,
              imbalance: int = DEFAULT_IMBALANCE) -> serve.Application:
    """The Ray Serve application (see the module docstring). `num_cpus` per replica defaults to `threads`,
    or to this machine's cores divided by `replicas`."""
    cpus = num_cpus if num_cpus is not None else threads or max(1, (os.cpu_count() or 1) // replicas)
    options: dict[str, Any] = {"num_replicas": replicas, "ray_actor_options": {"num_cpus": cpus},
                               "max_queued_requests": config.max_queue}
    if routing == "default":
        return IngressReplica.options(**options).bind(config, threads, cache_dir)
    router = RequestRouterConfig(request_router_class=PrefixAffinityRouter,
                                 request_router_kwargs={"min_match": min_match, "imbalance": imbalance})
    return Front.bind(Replica.options(**options, request_router_config=router).bind(config, threads, cache_dir),
                      config)


class BuildArgs(BaseModel):
    """`build`'s arguments (`serve run ... key=value`, or `args:` in a Ray Serve config file)."""

    model_config = ConfigDict(extra="forbid")

    config: str | None = Field(None, description="a server YAML (models and limits); none: the embedded guard")
    replicas: int = Field(1, ge=1)
    routing: Routing = "default"
    threads: int | None = Field(None, ge=1, description="torch threads per replica (default: its num_cpus)")
    num_cpus: float | None = Field(None, ge=0, description="CPUs Ray reserves per replica")
    cache_dir: str | None = Field(None, description="prefix state cache directory shared by the replicas")
    host: str | None = Field(None, description="the address Ray's HTTP proxy binds: beyond loopback, an API key "
                             "is required ($RWKV7_API_KEY)")
    min_match: float = DEFAULT_MIN_MATCH
    imbalance: int = DEFAULT_IMBALANCE


def build(args: dict[str, Any]) -> serve.Application:
    """The application builder for `serve run` / `serve deploy`:
    `serve run rwkv7_provider.server.ray_app:build replicas=2 config=models.yaml routing=affinity`."""
    try:
        parsed = BuildArgs.model_validate(args)
    except ValidationError as e:
        raise ParameterError(format_errors(e, "ray_app.build arguments")) from None
    limits = {"host": parsed.host}
    config = load_config(parsed.config, **limits) if parsed.config else build_config([default_model()], **limits)
    return build_app(config, **parsed.model_dump(exclude={"config", "host"}))


@contextmanager
def local_cluster(host: str, port: int, *, num_cpus: int | None = None, log_to_driver: bool = True) -> Iterator[None]:
    """A Ray cluster on this machine with Serve's HTTP proxy on host:port, stopped (every Ray process of it)
    on exit."""
    # address="local": always a new cluster, never one that `ray start` left registered in /tmp/ray
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, configure_logging=False,
             log_to_driver=log_to_driver)
    try:
        serve.start(http_options={"host": host, "port": port})
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


@contextmanager
def joined_cluster(address: str, host: str, port: int) -> Iterator[None]:
    """An existing Ray cluster (`ray start --head`); only this application is removed on exit."""
    ray.init(address=address, configure_logging=False)
    try:
        serve.start(http_options={"host": host, "port": port})
        yield
    finally:
        serve.delete(APP_NAME)
        ray.shutdown()


def run(config: ServerConfig, *, replicas: int, routing: Routing = "default", address: str | None = None,
        threads: int | None = None, cache_dir: str | None = None) -> int:
    """`rwkv7-provider serve --replicas N`: deploy on Ray (a local cluster, or `address`'s), serve until
    SIGINT / SIGTERM, then remove what was started (the whole local cluster, or just this application)."""
    cluster = joined_cluster(address, config.host, config.port) if address else local_cluster(config.host, config.port)
    with cluster:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs its own (aborting) handlers
            signal.signal(sig, lambda *_: stop.set())
        serve.run(build_app(config, replicas=replicas, routing=routing, threads=threads, cache_dir=cache_dir),
                  name=APP_NAME, route_prefix="/")
        log.info("serving %s on http://%s:%d/v1 with %d replica(s), %s routing (Ctrl-C stops)",
                 ", ".join(m.name for m in config.models), config.host, config.port, replicas, routing)
        stop.wait()
        log.info("stopping")
    return 0
