"""OpenAICompatProvider: one pooled ``httpx.AsyncClient``, JSON or SSE, retries from :class:`RetryPlan`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

import httpx

from ..._exceptions import InvalidRequestError, RemoteTimeoutError, status_class
from ..._models import GenerationRequest, ModelSpec
from ..base import Capabilities, Provider, ProviderChunk, ProviderDone
from ..presets import ProviderPreset, RemoteOptions
from ._errors import MAX_ERROR_BODY, CallErrors, body_message, retry_after, retryable_cls
from ._retry import RetryPlan
from ._secrets import Redactor, cache_scope, check_api_key, check_base_url
from ._transport import capped, drain, events, is_sse, read_error_body
from ._wire import Parser, build_body, loads, remote_constraint

__all__ = ["OpenAICompatProvider"]

logger = logging.getLogger("steadytext_async")


class OpenAICompatProvider(Provider):
    """An OpenAI-compatible server (chat or legacy completions API) over one pooled ``httpx.AsyncClient``.

    ``transport`` replaces the network (``httpx.MockTransport`` in tests); ``sse=False`` makes :meth:`stream` send
    one non-streaming request by default. Must be used on one event loop. ``cache_scope`` is the non-reversible
    identity of the credentials (key and preset headers) that remote cache entries are scoped by.
    """

    def __init__(
        self,
        preset: ProviderPreset,
        *,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sse: bool = True,
    ) -> None:
        check_base_url(preset.base_url)
        self.preset = preset
        self.name = preset.name
        self.base_url = preset.base_url
        self.sse = sse
        self.capabilities = Capabilities(deterministic=False)
        self._api_key = check_api_key(api_key, provider=preset.name)
        self._redact = Redactor(self._api_key, preset.headers)
        self.cache_scope = cache_scope(self._api_key, preset.headers)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._url = preset.base_url.rstrip("/") + ("/chat/completions" if preset.api == "chat" else "/completions")

    def __repr__(self) -> str:
        return f"<OpenAICompatProvider {self.name!r} base_url={self.base_url!r} api={self.preset.api!r}>"

    def __reduce__(self) -> Any:
        raise TypeError("a remote provider holds an API key and cannot be pickled")

    @property
    def options(self) -> RemoteOptions:
        return self.preset.options

    @property
    def client(self) -> httpx.AsyncClient:
        """The shared connection pool (created on first use)."""
        if self._client is None:
            o = self.options
            headers = {"Accept": "application/json", **dict(self.preset.headers)}
            if self._api_key is not None:
                headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
            self._client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(o.timeout, connect=o.connect_timeout),
                limits=httpx.Limits(
                    max_connections=o.max_connections,
                    max_keepalive_connections=o.max_keepalive_connections,
                    keepalive_expiry=o.keepalive_expiry,
                ),
                transport=self._transport,
                follow_redirects=False,
            )
        return self._client

    async def aclose(self) -> None:
        """Close pooled connections; the provider opens a new pool if used again."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- generation ----------------------------------------------------------------------------------------
    def spec_for(self, name: str, model_id: str) -> ModelSpec:
        prompt_format: Literal["raw", "chat"] = "raw" if self.preset.api == "completions" else "chat"
        return ModelSpec(provider=name, name=model_id, base_url=self.base_url, prompt_format=prompt_format)

    def check(self, request: GenerationRequest, spec: ModelSpec | None = None) -> None:
        if request.logprobs and not self.preset.logprobs:
            raise InvalidRequestError(f"provider {self.name!r} does not return logprobs")

    async def stream(
        self, spec: ModelSpec, request: GenerationRequest, *, sse: bool | None = None
    ) -> AsyncIterator[ProviderChunk | ProviderDone]:
        """Generate; yield chunks, then one ProviderDone. ``sse=False`` sends one non-streaming request."""
        self.check(request)
        o = self.options
        use_sse = self.sse if sse is None else sse
        body = build_body(self.preset, spec, request, stream=use_sse)
        translated = remote_constraint(request.constraint, self.preset)
        deadline = asyncio.get_running_loop().time() + o.deadline
        errors = CallErrors(self.name, self._redact, deadline_s=o.deadline, timeout_s=o.timeout)
        plan = RetryPlan(self.name, o, deadline)
        errors.give_up = lambda cls, after: plan.decide(errors.attempts, after) is None
        response = await plan.run(lambda n: self._send(errors, n, body, use_sse, deadline))
        parser = Parser(request, self.preset.api == "chat", max_bytes_per_token=o.max_bytes_per_token)
        parser.info["attempts"] = errors.attempts
        request_id = response.headers.get("x-request-id")
        if request_id:
            parser.info["request_id"] = request_id
        held: list[ProviderChunk] | None = None  # a wrapped answer ({"choice": ...}) is unwrapped once complete
        if translated is not None and translated.unwrap != "none":
            held = []
        try:
            with errors.mapped("streaming" if is_sse(response) else "reading"):
                async with contextlib.aclosing(self._chunks(response, parser, use_sse, deadline)) as chunks:
                    async for chunk in chunks:
                        if held is None:
                            yield chunk
                        else:
                            held.append(chunk)
                done = parser.done()
            if held is not None and translated is not None:
                text = translated.output("".join(c.text for c in held))
                yield ProviderChunk(text, [t for c in held for t in c.token_ids], None)
            yield done
        finally:
            await response.aclose()

    async def _chunks(
        self, response: httpx.Response, parser: Parser, use_sse: bool, deadline: float
    ) -> AsyncGenerator[ProviderChunk, None]:
        """The response's chunks: SSE events, or the one JSON document (also when the server ignored ``stream``)."""
        if not is_sse(response):
            if use_sse:  # a server that ignores stream=true and answers with one JSON document
                async with asyncio.timeout_at(deadline):
                    await response.aread()
            chunk = parser.feed(loads(response.content, "response body"), delta=False)
            if chunk is not None:
                yield chunk
            return
        source = events(response)
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await anext(source)
                except StopAsyncIteration:
                    return
                if event.data == "[DONE]":
                    parser.saw_done = True
                    await drain(source, deadline)
                    return
                if event.data:
                    chunk = parser.feed(loads(event.data, "stream event"), delta=True)
                    if chunk is not None:
                        yield chunk
        finally:
            await source.aclose()  # type: ignore[attr-defined]  # an async generator

    # -- one HTTP request --------------------------------------------------------------------------------
    async def _send(
        self, errors: CallErrors, attempt: int, body: dict[str, Any], stream: bool, deadline: float
    ) -> httpx.Response:
        """POST ``body`` (attempt number ``attempt``): a 2xx response (headers only when streaming), or raise."""
        errors.attempts = attempt
        client = self.client
        if deadline - asyncio.get_running_loop().time() <= 0:
            message = f"the overall deadline of {self.options.deadline:g}s expired"
            raise errors.build(RemoteTimeoutError, message, opening=True)
        request = client.build_request(
            "POST", self._url, json=body, headers={"Accept": "text/event-stream"} if stream else None
        )
        with errors.mapped(f"talking to {self.base_url}", opening=True):
            async with asyncio.timeout_at(deadline):
                raw = await client.send(request, stream=True)
                response = capped(raw, self.options.max_response_bytes)
                try:
                    if not 200 <= raw.status_code < 300:
                        await self._raise_status(errors, raw)
                    if not stream:
                        await response.aread()
                except BaseException:
                    await response.aclose()
                    raise
        logger.debug("%s: POST %s -> %d", self.name, self._url, raw.status_code)
        return response

    async def _raise_status(self, errors: CallErrors, response: httpx.Response) -> None:
        # Read a little past the limit so a key straddling it is still redacted whole.
        text = self._redact(await read_error_body(response, MAX_ERROR_BODY + 512))[:MAX_ERROR_BODY]
        status = response.status_code
        cls = status_class(status)
        after = retry_after(response.headers) if retryable_cls(cls) else None
        message = f"HTTP {status}: {body_message(text) or response.reason_phrase}"
        if after is not None:
            message += f" (Retry-After {after:g}s)"
        raise errors.build(
            cls,
            message,
            opening=True,
            status_code=status,
            request_id=response.headers.get("x-request-id"),
            body=text,
            retry_after=after,
        )
