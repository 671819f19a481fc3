"""The daemon's private endpoint: raw provider events of one local generation, as JSON lines.

The caller (:class:`~steadytext_async.providers.daemon.DaemonProvider`) has already validated the request, peeked
its cache and resolved the model; this side checks that it would produce the same bytes (same model file, same
``n_ctx`` and ``n_batch``; 409 otherwise, and the caller generates in-process) and streams the worker's events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pydantic
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .._exceptions import InvalidRequestError
from .._modelref import parse_model
from .._models import GenerationRequest
from ..providers.base import ProviderChunk, ProviderDone
from ..providers.daemon import encode_error, encode_event
from ._engine import local_events, resolve_local
from ._errors import HTTPError
from ._sse import until

if TYPE_CHECKING:
    from ._app import ServerState

__all__ = ["handler"]


def _parse(body: Any) -> GenerationRequest:
    if not isinstance(body, dict) or not isinstance(body.get("request"), dict):
        raise InvalidRequestError("expected {'request': {...}, 'model_sha256': ..., 'n_ctx': ..., 'n_batch': ...}")
    try:
        request = GenerationRequest.model_validate(body["request"])
    except pydantic.ValidationError as exc:
        raise InvalidRequestError(f"malformed request: {exc}") from None
    model = request.model
    if model is not None and parse_model(model).kind in ("remote", "file"):
        raise HTTPError(409, f"the daemon serves registry models only, not {model!r}", code="daemon_mismatch")
    return request


def handler(state: ServerState) -> Any:
    async def run(request: Request) -> Response:
        from ._app import read_json

        body = await read_json(request)
        req = _parse(body)
        settings = state.config.settings
        if (body.get("n_ctx"), body.get("n_batch")) != (settings.n_ctx, settings.n_batch):
            raise HTTPError(
                409,
                f"the daemon runs n_ctx={settings.n_ctx}, n_batch={settings.n_batch}; the caller wants "
                f"n_ctx={body.get('n_ctx')}, n_batch={body.get('n_batch')}",
                code="daemon_mismatch",
            )
        client = state.sdk
        spec = await resolve_local(client, req)
        if (spec.sha256, spec.prompt_format) != (body.get("model_sha256"), body.get("prompt_format")):
            raise HTTPError(
                409, f"the daemon resolves this request to another model ({spec.name})", code="daemon_mismatch"
            )
        client._local.check(req, spec)
        events = until(local_events(client, spec, req), state.stop)
        first = await anext(events)
        return StreamingResponse(_lines(state, first, events), media_type="application/x-ndjson")

    return run


async def _lines(
    state: ServerState, first: ProviderChunk | ProviderDone, events: AsyncIterator[ProviderChunk | ProviderDone]
) -> AsyncIterator[bytes]:
    state.metrics.in_flight_generations += 1
    try:
        event: ProviderChunk | ProviderDone | None = first
        while event is not None:
            yield encode_event(event)
            if isinstance(event, ProviderDone):
                state.metrics.record_generated(event.completion_tokens)
                break
            event = await anext(events, None)
    except Exception as exc:  # the caller raises the matching SteadyTextError (WorkerError if unknown)
        yield encode_error(exc)
    finally:
        state.metrics.in_flight_generations -= 1
        await events.aclose()  # type: ignore[attr-defined]
