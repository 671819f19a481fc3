"""The daemon's private endpoint: raw provider events of one local generation, as JSON lines.

Off unless the server runs with ``--daemon``. The caller (:class:`~steadytext_async.providers.daemon.DaemonProvider`)
has validated the request, peeked its cache and resolved the model, but a peer is not trusted: the request is
validated again exactly as :func:`~steadytext_async._validate.build_request` validates a call (its constraint
normalized again), models the server may not load (files, Hub repos, registry models not on the host) are refused
before anything resolves, and the server checks that it would produce the same bytes (same model file, same
``n_ctx`` and ``n_batch``; 409 otherwise, and the caller generates in-process) before streaming the worker's events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pydantic
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .._exceptions import InvalidRequestError
from .._models import GenerationRequest
from .._replay import recorded_constraint
from .._validate import build_request
from ..providers.base import ProviderChunk, ProviderDone
from ..providers.daemon import encode_error, encode_event
from ._errors import HTTPError, log_failure
from ._openai import MAX_TOP_LOGPROBS
from ._policy import check_model
from ._sse import ShuttingDown, or_stop, until
from ._state import ServerState, read_json

__all__ = ["handler"]


def _parse(body: Any) -> GenerationRequest:
    """The caller's request, validated again exactly as the SDK validates a call (a peer is not trusted to have)."""
    if not isinstance(body, dict) or not isinstance(body.get("request"), dict):
        raise InvalidRequestError("expected {'request': {...}, 'model_sha256': ..., 'n_ctx': ..., 'n_batch': ...}")
    try:
        given = GenerationRequest.model_validate(body["request"])
    except pydantic.ValidationError as exc:
        raise InvalidRequestError(f"malformed request: {str(exc)[:500]}") from None
    if given.model_ref.kind in ("remote", "hub", "file"):
        raise HTTPError(409, "the daemon serves registry models only", code="daemon_mismatch")
    constraint = recorded_constraint(given.constraint.canonical) if given.constraint is not None else None
    if constraint is not None and given.eos_string != "[EOS]":
        raise InvalidRequestError("eos_string cannot be combined with a constraint")
    if not 0 <= given.top_logprobs <= MAX_TOP_LOGPROBS:
        raise InvalidRequestError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
    s = given.sampling
    messages = [m.wire() for m in given.messages] if given.messages is not None else None  # checked again too
    request = build_request(
        given.prompt,
        messages=messages,
        max_new_tokens=given.max_new_tokens,
        return_logprobs=given.logprobs,
        eos_string=given.eos_string,
        model=given.model,
        size=given.size,
        seed=s.seed,
        temperature=s.temperature,
        strict=given.strict,
    )
    sampling = request.sampling.model_copy(update={"top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p})
    update = {"sampling": sampling, "top_logprobs": given.top_logprobs, "constraint": constraint}
    return request.model_copy(update=update)


def handler(state: ServerState) -> Any:
    async def run(request: Request) -> Response:
        body = await read_json(request, state.config)
        req = await asyncio.to_thread(_parse, body)  # a constraint is compiled again: off the loop
        settings = state.config.settings
        if (body.get("n_ctx"), body.get("n_batch")) != (settings.n_ctx, settings.n_batch):
            raise HTTPError(
                409,
                f"the daemon runs n_ctx={settings.n_ctx}, n_batch={settings.n_batch}; the caller wants "
                f"n_ctx={body.get('n_ctx')}, n_batch={body.get('n_batch')}",
                code="daemon_mismatch",
            )
        check_model(req.model_ref, allow_download=state.config.allow_download)  # before anything resolves
        client = state.sdk
        client.check_local(req)  # what needs no model (max_new_tokens < n_ctx), before resolving one
        spec = await client.resolve_local(req)
        if (spec.sha256, spec.prompt_format) != (body.get("model_sha256"), body.get("prompt_format")):
            raise HTTPError(
                409, f"the daemon resolves this request to another model ({spec.name})", code="daemon_mismatch"
            )
        client.check_local(req, spec)
        events = until(client.stream_local(spec, req), state.stop)
        try:  # a caller gone while its request waits for a worker or its prompt cancels it
            first = await or_stop(anext(events), state.stop, request)
        except BaseException:
            await events.aclose()  # type: ignore[attr-defined]
            raise
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
    except Exception as exc:  # the caller raises the matching SteadyTextError (_errorwire.from_record)
        log_failure(exc)  # a server-side failure is in this server's log too, as on the other endpoints
        yield encode_error(exc, retryable=isinstance(exc, ShuttingDown))  # stopping: the caller resumes in-process
    finally:
        state.metrics.in_flight_generations -= 1
        await events.aclose()  # type: ignore[attr-defined]
