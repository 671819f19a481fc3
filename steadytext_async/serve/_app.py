"""The Starlette application: OpenAI-compatible endpoints, health, metrics and the daemon's private endpoint.

One :class:`~steadytext_async.AsyncSteadyText` per server (made in the lifespan), so responses are the SDK's bytes
and share the SDK's result cache. Errors become OpenAI-style JSON at one point (``_errors.error_response``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .._client import AsyncSteadyText
from .._models import Chunk, GenerationRequest, GenerationResult
from .._registry import REGISTRY
from .._validate import build_request
from .._version import __version__
from ..providers.daemon import DAEMON_PATH
from . import _daemon_endpoint
from ._errors import HTTPError, error_response
from ._openai import DEFAULT_MODEL, Envelope, Kind, ParsedRequest, parse_request, response_body
from ._policy import check_model
from ._sse import ShuttingDown, or_stop, sse, until
from ._state import ServeConfig, ServerState, read_json

__all__ = ["ServeConfig", "create_app"]

logger = logging.getLogger("steadytext_async")
T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]


def _authorized(request: Request, token: str | None) -> bool:
    if token is None:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    return hmac.compare_digest(f"{scheme.lower()} {given}".encode(), f"bearer {token}".encode())


def _endpoint(state: ServerState, name: str, handler: Handler, *, auth: bool = True) -> Handler:
    """Auth, error mapping and request metrics around one route handler."""

    async def wrapped(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            if auth and not _authorized(request, state.config.token):
                raise HTTPError(401, "missing or wrong bearer token", code="invalid_api_key")
            response = await handler(request)
        except Exception as exc:
            status, body = error_response(exc)
            response = JSONResponse(body, status_code=status)
        state.metrics.requests.labels(name, str(response.status_code)).inc()
        state.metrics.latency.labels(name).observe(time.perf_counter() - t0)
        return response

    return wrapped


async def _validated(state: ServerState, req: ParsedRequest) -> GenerationRequest:
    """The SDK request, validated in a thread (a large schema takes seconds: the loop keeps serving), and the
    model checked against what this server may load."""
    request = await asyncio.to_thread(build_request, req.prompt, **req.kwargs)
    check_model(request.model_ref, allow_download=state.config.allow_download)
    return request


def _admit(state: ServerState) -> None:
    if state.metrics.in_flight_generations >= state.config.max_queued:
        raise HTTPError(429, "too many generations are queued; retry later", type="rate_limit_error", code="queue_full")


def _generation(state: ServerState, kind: Kind) -> Handler:
    async def handler(request: Request) -> Response:
        if state.draining:
            raise ShuttingDown
        req = parse_request(kind, await read_json(request, state.config), allow_remote=state.config.allow_remote)
        env = Envelope(req)
        metrics = state.metrics
        _admit(state)
        metrics.in_flight_generations += 1
        handed_off = False  # once the stream body owns the count, it decrements it
        try:
            sdk_request = await _validated(state, req)
            if not req.stream:
                result = await or_stop(state.sdk.run_request(sdk_request), state.stop, request)
                _record(state, result)
                return JSONResponse(response_body(env, result))
            items = until(state.sdk.stream_request(sdk_request), state.stop)
            try:  # errors before the first piece still get their HTTP status; a client gone meanwhile cancels it
                first = await or_stop(anext(items), state.stop, request)
            except BaseException:
                await items.aclose()  # type: ignore[attr-defined]
                raise
            body = _counted(state, sse(env, first, items, lambda r: _record(state, r)))
            handed_off = True
            return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        finally:
            if not handed_off:
                metrics.in_flight_generations -= 1

    return handler


async def _counted(state: ServerState, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for part in body:
            yield part
    finally:
        state.metrics.in_flight_generations -= 1
        await body.aclose()  # type: ignore[attr-defined]


def _record(state: ServerState, result: GenerationResult | Chunk) -> None:
    if isinstance(result, GenerationResult):
        state.metrics.record_result(result)


def _models(state: ServerState) -> Handler:
    async def handler(request: Request) -> Response:
        created = int(state.started)
        ids = [DEFAULT_MODEL, *REGISTRY]
        data = [{"id": i, "object": "model", "created": created, "owned_by": "steadytext"} for i in ids]
        return JSONResponse({"object": "list", "data": data})

    return handler


def _health(state: ServerState) -> Handler:
    async def handler(request: Request) -> Response:
        body: dict[str, Any] = {"status": "draining" if state.draining else "ok"}
        if _authorized(request, state.config.token):  # details (version, pids, counters) only behind the token
            pids = state.client.worker_pids() if state.client is not None else []
            body.update(version=__version__, **state.stats(), worker_pids=pids)
        return JSONResponse(body, status_code=503 if state.draining else 200)

    return handler


def _metrics(state: ServerState) -> Handler:
    async def handler(request: Request) -> Response:
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return handler


async def _keep_full(state: ServerState, interval: float = 0.2) -> None:
    """Replace dead workers of the default model right away, not on the next request that needs one."""
    while not state.draining:
        await asyncio.sleep(interval)
        s = state.stats()
        if s["workers_alive"] < s["workers_max"] and not state.draining:
            try:
                await state.sdk.preload()
            except Exception as exc:  # the next request reports it; keep watching
                logger.warning("serve: could not restart workers: %s", exc)
                await asyncio.sleep(5.0)


def create_app(config: ServeConfig) -> Starlette:
    state = ServerState(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # the server's own generations run here: never forwarded to a daemon (which could be this server); strict, so
        # a model that cannot load is a 503, never fallback text answered as a 200
        state.client = AsyncSteadyText(dataclasses.replace(config.settings, daemon_url=None, strict=True))
        keeper = None
        if config.preload:
            await state.client.preload()
            keeper = asyncio.ensure_future(_keep_full(state))
        try:
            yield
        finally:
            state.begin_drain()
            state.stop.set()
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            await state.client.aclose()

    routes = [
        Route("/health", _endpoint(state, "health", _health(state), auth=False), methods=["GET"]),
        Route("/metrics", _endpoint(state, "metrics", _metrics(state)), methods=["GET"]),
        Route("/v1/models", _endpoint(state, "models", _models(state)), methods=["GET"]),
        Route("/v1/completions", _endpoint(state, "completions", _generation(state, "completion")), methods=["POST"]),
        Route("/v1/chat/completions", _endpoint(state, "chat", _generation(state, "chat")), methods=["POST"]),
    ]
    if config.daemon:  # off unless asked for (--daemon): it streams raw provider events to DaemonProvider
        routes.append(Route(DAEMON_PATH, _endpoint(state, "daemon", _daemon_endpoint.handler(state)), methods=["POST"]))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.serve = state
    return app
