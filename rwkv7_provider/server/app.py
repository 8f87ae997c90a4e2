"""`create_app(config)`: the OpenAI-compatible FastAPI application of `rwkv7-provider serve`.

Every request runs through the served model's `RWKV7Client` on the process-wide engine of its checkpoint, so
HTTP requests share the registry, the batching scheduler and the prefix state cache with in-process callers
(an HTTP check and an `LLMRails` check in the same process land in one batch).

The factory has no side effects: engines load in the app's lifespan (in a thread, so `/healthz` answers
"loading" meanwhile and the server is ready only once every engine is loaded, its prompts pre-warmed and
the CPU kernels built). Deployments may add to the app before it starts: `response_headers=` puts headers on
every response, and `app.include_router(...)` / `app.add_api_route(...)` add routes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from ..errors import RWKV7Error
from ..integrations.client import Completion, RWKV7Client
from ..runtime.templates import render
from . import responses as R
from .config import ServedModel, ServerConfig
from .limits import Admission, ClientGone, Gate, guarded
from .metrics import CONTENT_TYPE, Metrics
from .prompting import chat_prompt
from .schema import APIError, ChatCompletionRequest, CompletionRequest, ModerationRequest, validation_error

log = logging.getLogger(__name__)
T = TypeVar("T", bound=BaseModel)
CLIENT_GONE = 499  # nginx's code for "client closed the request": only the metrics see it


class Service:
    """One app's state: its served models' clients, readiness, admission and metrics."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.served = {m.name: m for m in config.models}
        self.clients = {m.name: RWKV7Client(m.settings) for m in config.models}  # cheap: engines load later
        self.status, self.error = "loading", None
        self.metrics = Metrics(self.engines)
        self.admission = Admission(config.max_queue, self.metrics.in_flight.set)

    def engines(self) -> dict[str, Any]:
        return {name: c.engine for name, c in self.clients.items()} if self.status == "ready" else {}

    def load(self) -> None:
        """Load every engine, pre-warm its prompts and build the CPU kernels (blocking: run in a thread)."""
        t0 = time.perf_counter()
        for served in self.config.models:
            engine = self.clients[served.name].engine
            if served.prompts:
                engine.prewarm_templates(list(served.prompts.values()))
        if any(m.settings.device == "cpu" for m in self.config.models):
            from ..model import cpu_kernels

            cpu_kernels.available()  # compiles once per machine; never inside a request
        self.status = "ready"
        log.info("serving %s (ready in %.1f s)", ", ".join(self.served), time.perf_counter() - t0)

    async def start(self) -> None:
        if self.status == "ready":  # loaded before the app started (a Ray Serve replica loads in its constructor)
            return
        try:
            await asyncio.to_thread(self.load)
        except Exception as e:  # noqa: BLE001 - reported by /healthz and the log; requests get 503
            self.status, self.error = "failed", f"{type(e).__name__}: {e}"
            log.exception("loading the served models failed")

    def model(self, name: str | None, param: str = "model") -> tuple[ServedModel, RWKV7Client]:
        served = self.served.get(name or "")
        if served is None:
            raise APIError(404, f"the model {name!r} does not exist; served: {sorted(self.served)}", param,
                           "model_not_found")
        if self.status != "ready":
            why = f"failed to load: {self.error}" if self.status == "failed" else "still loading"
            raise APIError(503, f"the server is not ready ({why})", code="not_ready",
                           headers={"Retry-After": "5"})
        return served, self.clients[served.name]

    def admissible(self, body: Any, n: int) -> tuple[ServedModel, RWKV7Client]:
        """The model and client for a completion request, after the server's own limits: `max_tokens_limit`,
        `max_n` (`n` completions in all), one stream per request."""
        served, client = self.model(body.model)
        limit = self.config.max_tokens_limit
        if body.max_tokens is not None and limit is not None and body.max_tokens > limit:
            raise APIError(400, f"max_tokens={body.max_tokens} is more than the server's max_tokens_limit={limit}",
                           "max_tokens", "invalid_value")
        if n > self.config.max_n:
            raise APIError(400, f"n={n} completions is more than the server's max_n={self.config.max_n}", "n",
                           "invalid_value")
        if body.stream and n > 1:
            raise APIError(400, "only one completion can be streamed per request (n = 1, one prompt)", "n",
                           "invalid_value")
        return served, client


async def parse(request: Request, schema: type[T]) -> T:
    try:
        return schema.model_validate_json(await request.body())
    except ValidationError as e:
        raise validation_error(e.errors()) from None


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _seeded(overrides: dict[str, Any], i: int) -> dict[str, Any]:
    """The i-th of `n` completions: a given seed advances per completion, so seeded choices differ."""
    return overrides | {"seed": overrides["seed"] + i} if i and overrides.get("seed") is not None else overrides


class _AdmittedStream(StreamingResponse):
    """A streaming response that frees its admission slot and closes its engine stream however it ends,
    even when the client left before the first event (then the event generator never started)."""

    def __init__(self, content: AsyncIterator[str], release: Any, source: Any) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.release, self.source = release, source

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()
            await self.source.aclose()


def create_app(config: ServerConfig, *, response_headers: Mapping[str, str] | None = None) -> FastAPI:
    """The application for `config` (see the module docstring); nothing loads until it starts."""
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(service.start())
        try:
            yield
        finally:
            loading.cancel()

    app = FastAPI(title="rwkv7-provider", summary="RWKV-7 behind the OpenAI API", lifespan=lifespan)
    app.state.service = service
    app.add_middleware(Gate, api_key=config.api_key, max_body_bytes=config.max_body_bytes,
                       headers=response_headers)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RWKV7Error)
    async def _bad_input(request: Request, exc: RWKV7Error) -> JSONResponse:
        return error_response(APIError(400, str(exc), code=type(exc).__name__))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(APIError(exc.status_code, str(exc.detail), code="not_found"
                                       if exc.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s", request.url.path, exc_info=exc)
        return error_response(APIError(500, "internal server error (details are in the server's log)"))

    async def observed(endpoint: str, model: str, work: Any) -> Response:
        """Run an endpoint's work, with its metrics; a vanished client gets nothing (and is counted)."""
        t0 = time.perf_counter()
        label = model if model in service.served else "unknown"
        status, response = 500, None
        try:
            response = await work
            status = response.status_code
            return response
        except APIError as e:
            status = e.status
            raise
        except RWKV7Error:
            status = 400
            raise
        except ClientGone:
            status = CLIENT_GONE
            return Response(status_code=CLIENT_GONE)
        finally:
            if not isinstance(response, StreamingResponse):  # a stream counts itself when it ends
                service.metrics.observe(endpoint, label, status, time.perf_counter() - t0)

    async def complete_all(request: Request, client: RWKV7Client, prompts: list[str], chat: bool, stop: Any,
                           overrides: dict[str, Any], n: int) -> list[Completion]:
        """`n` completions of each prompt, concurrently (so they batch), within one admission slot."""
        client.options(stop, chat, overrides)  # bad options fail here, as a 400
        with service.admission.slot():
            work = asyncio.gather(*(client.acomplete(p, stop, chat=chat, **_seeded(overrides, i))
                                    for p in prompts for i in range(n)))
            return await guarded(request, work, config.request_timeout)

    # ------------------------------------------------------------------ routes

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        body: dict[str, Any] = {"status": service.status, "models": sorted(service.served)}
        if service.error:
            body["error"] = service.error
        return JSONResponse(body, status_code=200 if service.status == "ready" else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def list_models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [_model_card(m) for m in config.models]})

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> JSONResponse:
        served = service.served.get(name)
        if served is None:
            raise APIError(404, f"the model {name!r} does not exist", "model", "model_not_found")
        return JSONResponse(_model_card(served))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await parse(request, ChatCompletionRequest)
        return await observed("chat.completions", body.model, _chat(request, body))

    async def _chat(request: Request, body: ChatCompletionRequest) -> Response:
        served, client = service.admissible(body, body.n)
        prompt, chat = chat_prompt(body, served.classifier)
        overrides = body.generation_overrides()
        if body.stream:
            return await _stream(request, "chat.completions", served, client, prompt, chat, body.stop, overrides,
                                 body.include_usage, R.ChatFrames(body))
        done = await complete_all(request, client, [prompt], chat, body.stop, overrides, body.n)
        service.metrics.tokens(served.name, done)
        choices = [R.chat_choice(i, d, body) for i, d in enumerate(done)]
        return JSONResponse(R.envelope("chat.completion", R.new_id("chatcmpl"), served.name, choices, done))

    async def _stream(request: Request, endpoint: str, served: ServedModel, client: RWKV7Client, prompt: str,
                      chat: bool, stop: Any, overrides: dict[str, Any], include_usage: bool, frames: Any) -> Response:
        """Deltas as server-sent events, framed by `frames` (chat or text completion chunks). The first item
        is awaited before answering, so a request the engine refuses (an over-long prompt) still gets its
        4xx; later failures end the stream with an error event."""
        client.options(stop, chat, overrides)
        release = service.admission.acquire()
        t0 = time.perf_counter()
        deadline = time.monotonic() + config.request_timeout
        items = client.acomplete_stream(prompt, stop, chat=chat, **overrides)
        try:
            first = await guarded(request, anext(items), config.request_timeout)
        except BaseException:
            release()
            await items.aclose()
            raise
        rid = R.new_id(frames.prefix)

        def event(choices: list[dict], usage: dict | None = None) -> str:
            return R.chunk(frames.kind, rid, served.name, choices, usage)

        async def events() -> AsyncIterator[str]:
            status, item = 200, first
            try:
                if frames.opening:
                    yield event(frames.opening)
                while isinstance(item, str):
                    if (delta := frames.delta(item)) is not None:
                        yield event(delta)
                    item = await asyncio.wait_for(anext(items), max(0.0, deadline - time.monotonic()))
                done: Completion = item
                service.metrics.tokens(served.name, [done])
                yield event(frames.closing(done))
                if include_usage:
                    yield event([], R.usage([done]))
            except TimeoutError:
                status = 504
                yield R.error_event(APIError(504, "the stream took longer than the server's request_timeout",
                                             code="timeout").body())
            except RWKV7Error as e:
                status = 400
                yield R.error_event(APIError(400, str(e), code=type(e).__name__).body())
            except asyncio.CancelledError:
                status = CLIENT_GONE
                raise
            finally:
                await items.aclose()
                service.metrics.observe(endpoint, served.name, status, time.perf_counter() - t0)
            yield R.DONE_EVENT

        return _AdmittedStream(events(), release, items)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await parse(request, CompletionRequest)
        return await observed("completions", body.model, _completions(request, body))

    async def _completions(request: Request, body: CompletionRequest) -> Response:
        served, client = service.admissible(body, body.n * len(body.prompts()))
        if body.stream:
            return await _stream(request, "completions", served, client, body.prompts()[0], False, body.stop,
                                 body.generation_overrides(), body.include_usage, R.CompletionFrames(body.logprobs))
        done = await complete_all(request, client, body.prompts(), False, body.stop, body.generation_overrides(),
                                  body.n)
        service.metrics.tokens(served.name, done)
        choices = [R.completion_choice(i, d, body.logprobs) for i, d in enumerate(done)]
        return JSONResponse(R.envelope("text_completion", R.new_id("cmpl"), served.name, choices, done))

    @app.post("/v1/moderations")
    async def moderations(request: Request) -> Response:
        body = await parse(request, ModerationRequest)
        name = body.model or next((m.name for m in config.models if _policies(m)), "")
        return await observed("moderations", name, _moderations(request, body, name))

    async def _moderations(request: Request, body: ModerationRequest, name: str) -> Response:
        served, client = service.model(name)
        policies = _policies(served)
        if not policies:
            raise APIError(400, f"the model {served.name!r} is not a moderation model: serve one with `choices` and "
                           "a prompt with {{ user_input }} (the embedded guard `default` is one)", "model")
        texts = body.texts()
        prompts = [render(t, user_input=x) for x in texts for t in policies.values()]
        done = await complete_all(request, client, prompts, False, None, {}, 1)
        service.metrics.tokens(served.name, done)
        k = len(policies)
        results = [R.moderation_result(dict(zip(policies, done[i * k:(i + 1) * k])), served.settings.choices[0])
                   for i in range(len(texts))]
        return JSONResponse({"id": R.new_id("modr"), "model": served.name, "results": results})

    return app


def _policies(served: ServedModel) -> dict[str, str]:
    """The served prompts a moderation can score a text with: a classifier's templates whose only
    per-request variable is `{{ user_input }}`."""
    if not served.classifier:
        return {}
    out = {}
    for task, template in served.prompts.items():
        try:
            render(template, user_input="")
        except (KeyError, ValueError):
            continue
        out[task] = template
    return out


def _model_card(served: ServedModel) -> dict[str, Any]:
    # no checkpoint path: the server's file layout is not the clients' business
    return {"id": served.name, "object": "model", "created": 0, "owned_by": "rwkv7-provider",
            "choices": served.settings.choices}
