"""OpenAI-compatible remote provider: one pooled ``httpx.AsyncClient``, JSON or SSE, tenacity retries.

Wire format -> ours:

- ``max_new_tokens`` -> ``max_tokens`` or ``max_completion_tokens`` (per preset); ``eos_string`` other than
  ``"[EOS]"`` -> ``stop``; ``temperature`` and ``seed`` as given. ``top_k``/``top_p``/``min_p`` are not sent.
- logprobs -> :class:`TokenLogprob` (``token_id`` is -1: OpenAI-style APIs do not return token ids; ``bytes`` is
  taken from the response or encoded from the token text).
- ``finish_reason`` "length" -> ``length``; "stop" -> ``eos`` when no stop string was sent, else ``stop_string``
  (servers that report ``stop_reason``, like vLLM, decide it exactly). A stream that ends without a
  ``finish_reason`` raises :class:`RemoteProtocolError`.

Retries (429, 5xx, connect/read errors) happen before the first byte of output reaches the caller; ``Retry-After``
is honoured; attempts and the overall deadline are bounded by :class:`RemoteOptions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import httpx
from httpx_sse import EventSource, SSEError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from .._exceptions import (
    InvalidRequestError,
    RemoteAuthenticationError,
    RemoteBadRequestError,
    RemoteConnectionError,
    RemoteError,
    RemoteNotFoundError,
    RemoteProtocolError,
    RemoteRateLimitError,
    RemoteServerError,
    RemoteStatusError,
    RemoteTimeoutError,
)
from .._models import FinishReason, GenerationRequest, ModelSpec, TokenLogprob, TopLogprob
from .base import Capabilities, ProviderChunk, ProviderDone, ProviderInfo
from .presets import ProviderPreset, RemoteOptions

if TYPE_CHECKING:
    from ..structured import Constraint
    from ..structured.remote import RemoteConstraint

__all__ = ["OpenAICompatProvider", "build_body", "remote_constraint"]

logger = logging.getLogger("steadytext_async")

_MAX_ERROR_BODY = 2000
_DRAIN_GRACE = 1.0  # seconds to read the end of a body after [DONE], so its connection can be reused
_sleep: Callable[[float], Any] = asyncio.sleep  # tests replace this to record waits


class _Secret:
    """An API key that never shows itself in repr/str and refuses to be pickled."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("API keys cannot be pickled")


def remote_constraint(constraint: Constraint | None, preset: ProviderPreset) -> RemoteConstraint | None:
    """The translation of a structured-output constraint for ``preset`` (None without a constraint).

    Presets named in ``structured.remote.PROVIDER_CAPABILITIES`` use their native feature; every other
    OpenAI-compatible server gets a plain ``response_format`` json_schema. Untranslatable constraints raise
    :class:`~steadytext_async.InvalidRequestError` before any request is sent.
    """
    if constraint is None:
        return None
    from ..structured.remote import PROVIDER_CAPABILITIES, translate

    return translate(constraint, preset.name if preset.name in PROVIDER_CAPABILITIES else "openai_compat")


def build_body(preset: ProviderPreset, spec: ModelSpec, request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
    """The JSON body sent to ``preset`` for ``request``."""
    body: dict[str, Any] = {"model": spec.name}
    chat = preset.api == "chat"
    if chat:
        body["messages"] = [{"role": "user", "content": request.prompt}]
    else:
        body["prompt"] = request.prompt
    body[preset.max_tokens_field] = request.max_new_tokens
    body["temperature"] = request.sampling.temperature
    body[preset.seed_field] = request.sampling.seed
    if request.stop_string is not None:
        body["stop"] = [request.stop_string]
    if request.logprobs:
        if chat:
            body["logprobs"] = True
            body["top_logprobs"] = request.top_logprobs
        else:
            body["logprobs"] = request.top_logprobs
    if stream:
        body["stream"] = True
        if preset.stream_usage:
            body["stream_options"] = {"include_usage": True}
    translated = remote_constraint(request.constraint, preset)
    if translated is not None:
        body.update(translated.body)
    return body


# -- errors ----------------------------------------------------------------------------------------------------


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date); None when absent or bad."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_class(status: int) -> type[RemoteStatusError]:
    if status in (401, 403):
        return RemoteAuthenticationError
    if status == 404:
        return RemoteNotFoundError
    if status == 429:
        return RemoteRateLimitError
    if status >= 500:
        return RemoteServerError
    if 400 <= status < 500:
        return RemoteBadRequestError
    return RemoteStatusError


def _error_message(error: object) -> str | None:
    """The message of an OpenAI-style ``error`` value (a dict with ``message``, or a string)."""
    message = error.get("message") if isinstance(error, dict) else error
    return message[:500] if isinstance(message, str) and message else None


def _body_message(text: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the (shortened) text."""
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500]
    return (_error_message(data.get("error")) if isinstance(data, dict) else None) or text[:500]


def _is_sse(response: httpx.Response) -> bool:
    return "text/event-stream" in response.headers.get("content-type", "") or "json" not in response.headers.get(
        "content-type", ""
    )


async def _drain(events: AsyncIterator[Any], deadline: float) -> None:
    """Read what follows ``[DONE]`` (normally just the end of the body); give up quietly after a short grace."""
    grace = min(deadline, asyncio.get_running_loop().time() + _DRAIN_GRACE)
    with contextlib.suppress(TimeoutError, httpx.HTTPError, SSEError):
        async with asyncio.timeout_at(grace):
            async for _ in events:
                pass


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, RemoteRateLimitError | RemoteServerError | RemoteConnectionError)


# -- response parsing ------------------------------------------------------------------------------------------


def _bytes(item: dict[str, Any]) -> list[int]:
    raw = item.get("bytes")
    if isinstance(raw, list):
        return [int(b) for b in raw]
    return list(str(item.get("token", "")).encode("utf-8"))


def _chat_logprobs(content: list[Any]) -> list[TokenLogprob]:
    return [
        TokenLogprob(
            token=item["token"],
            token_id=-1,
            bytes=_bytes(item),
            logprob=float(item["logprob"]),
            top_logprobs=[
                TopLogprob(token=top["token"], token_id=-1, bytes=_bytes(top), logprob=float(top["logprob"]))
                for top in item.get("top_logprobs") or ()
            ],
        )
        for item in content
    ]


def _completion_logprobs(lp: dict[str, Any]) -> list[TokenLogprob]:
    tokens = lp.get("tokens") or []
    values = lp.get("token_logprobs") or []
    tops = lp.get("top_logprobs") or [None] * len(tokens)
    if not len(tokens) == len(values) == len(tops):
        raise ValueError("logprobs lists differ in length")
    out = []
    for token, value, top in zip(tokens, values, tops, strict=True):
        out.append(
            TokenLogprob(
                token=token,
                token_id=-1,
                bytes=list(token.encode("utf-8")),
                logprob=float(value),
                top_logprobs=[
                    TopLogprob(token=t, token_id=-1, bytes=list(t.encode("utf-8")), logprob=float(v))
                    for t, v in (top or {}).items()
                ],
            )
        )
    return out


class _Parser:
    """Turns response objects or stream chunks (chat or completions) into provider events."""

    def __init__(self, provider: str, request: GenerationRequest, chat: bool) -> None:
        self.provider = provider
        self.request = request
        self.chat = chat
        self.finish_reason: str | None = None
        self.stop_reason: object = None
        self.has_stop_reason = False
        self.usage: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.got_text = False
        self.logprob_tokens = 0

    def feed(self, payload: Any, *, delta: bool) -> ProviderChunk | None:
        if not isinstance(payload, dict):
            raise ValueError("not a JSON object")
        error = payload.get("error")
        if error is not None:
            message = _error_message(error) or json.dumps(error)[:500]
            raise RemoteError(f"{self.provider} reported an error: {message}", provider=self.provider)
        if isinstance(payload.get("usage"), dict):
            self.usage = payload["usage"]
        for key in ("system_fingerprint", "model", "id"):
            if payload.get(key):
                self.info[f"remote_{key}"] = payload[key]
        choices = payload.get("choices") or []
        if not choices:
            return None
        choice = choices[0]
        if self.chat:
            part: dict[str, Any] = choice.get("delta" if delta else "message") or {}
            text = part.get("content") or ""
        else:
            text = choice.get("text") or ""
        if not isinstance(text, str):
            raise ValueError("content is not a string")
        tokens = None
        lp = choice.get("logprobs")
        if self.request.logprobs and lp:
            tokens = _chat_logprobs(lp.get("content") or []) if self.chat else _completion_logprobs(lp)
            self.logprob_tokens += len(tokens)
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        if "stop_reason" in choice:
            self.has_stop_reason = True
            self.stop_reason = choice["stop_reason"]
        if not text and not tokens:
            return None
        self.got_text = self.got_text or bool(text)
        return ProviderChunk(text=text, token_ids=[], tokens=tokens)

    def done(self) -> ProviderDone:
        if self.finish_reason is None:
            raise RemoteProtocolError(f"{self.provider}: the response ended without a finish_reason")
        if self.request.logprobs and self.got_text and not self.logprob_tokens:
            raise RemoteProtocolError(f"{self.provider}: logprobs were requested but the response has none")
        usage = self.usage
        return ProviderDone(
            finish_reason=self._finish(self.finish_reason),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or self.logprob_tokens),  # 0: not reported
            info=cast(ProviderInfo, self.info),  # deterministic or not: the provider's capabilities say
        )

    def _finish(self, reason: str) -> FinishReason:
        if reason in ("length", "max_tokens", "model_length"):
            return "length"
        if reason in ("stop", "eos", "end_turn", "stop_sequence"):
            if self.request.stop_string is None:
                return "eos"
            if self.has_stop_reason:
                return "stop_string" if isinstance(self.stop_reason, str) else "eos"
            return "eos" if reason == "eos" else "stop_string"
        raise RemoteError(f"{self.provider} stopped with unsupported finish_reason {reason!r}")


# -- the provider ----------------------------------------------------------------------------------------------


class OpenAICompatProvider:
    """An OpenAI-compatible server (chat or legacy completions API) over one pooled ``httpx.AsyncClient``.

    ``transport`` replaces the network (``httpx.MockTransport`` in tests); ``sse=False`` makes :meth:`stream` send
    one non-streaming request by default. Must be used on one event loop.
    """

    def __init__(
        self,
        preset: ProviderPreset,
        *,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sse: bool = True,
    ) -> None:
        self.preset = preset
        self.name = preset.name
        self.base_url = preset.base_url
        self.sse = sse
        self.capabilities = Capabilities(deterministic=False)
        self._api_key = _Secret(api_key) if api_key else None
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._url = preset.base_url.rstrip("/") + ("/chat/completions" if preset.api == "chat" else "/completions")

    def __repr__(self) -> str:
        return f"<OpenAICompatProvider {self.name!r} base_url={self.base_url!r} api={self.preset.api!r}>"

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
                headers["Authorization"] = f"Bearer {self._api_key.get()}"
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
    def check(self, request: GenerationRequest) -> None:
        if request.logprobs and not self.preset.logprobs:
            raise InvalidRequestError(f"provider {self.name!r} does not return logprobs")

    async def stream(
        self, spec: ModelSpec, request: GenerationRequest, *, sse: bool | None = None
    ) -> AsyncIterator[ProviderChunk | ProviderDone]:
        """Generate; yield chunks, then one ProviderDone. ``sse=False`` sends one non-streaming request."""
        self.check(request)
        use_sse = self.sse if sse is None else sse
        body = build_body(self.preset, spec, request, stream=use_sse)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.deadline
        parser = _Parser(self.name, request, self.preset.api == "chat")
        response, attempts = await self._open(body, use_sse, deadline)
        parser.info["attempts"] = attempts
        request_id = response.headers.get("x-request-id")
        if request_id:
            parser.info["request_id"] = request_id
        translated = remote_constraint(request.constraint, self.preset)
        held: list[ProviderChunk] | None = None  # a wrapped answer ({"choice": ...}) is unwrapped once complete
        if translated is not None and translated.unwrap != "none":
            held = []
        try:
            if _is_sse(response):  # also when we asked for one document but the server streams anyway
                async with contextlib.aclosing(self._events(response, parser, deadline, attempts)) as events:
                    async for chunk in events:
                        if held is None:
                            yield chunk
                        else:
                            held.append(chunk)
            else:
                if use_sse:  # a server that ignores stream=true and answers with one JSON document
                    await self._read(response, deadline, attempts)
                for chunk in self._document(response, parser, attempts):
                    if held is None:
                        yield chunk
                    else:
                        held.append(chunk)
            if held is not None and translated is not None:
                text = translated.output("".join(c.text for c in held))
                yield ProviderChunk(text, [t for c in held for t in c.token_ids], None)
            try:
                done = parser.done()
            except RemoteError as exc:
                exc.attempts = attempts
                raise
            yield done
        finally:
            await response.aclose()

    async def _read(self, response: httpx.Response, deadline: float, attempts: int) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                await response.aread()
        except TimeoutError:
            raise RemoteTimeoutError(
                f"{self.name}: the overall deadline of {self.options.deadline:g}s expired",
                provider=self.name,
                attempts=attempts,
            ) from None
        except httpx.TimeoutException:
            raise RemoteTimeoutError(
                f"{self.name}: reading the response timed out", provider=self.name, attempts=attempts
            ) from None
        except httpx.TransportError as exc:
            raise RemoteConnectionError(
                f"{self.name}: the connection broke while reading ({type(exc).__name__})",
                provider=self.name,
                attempts=attempts,
            ) from None

    def _document(self, response: httpx.Response, parser: _Parser, attempts: int) -> Iterator[ProviderChunk]:
        try:
            chunk = parser.feed(json.loads(response.content), delta=False)
        except RemoteError as exc:
            exc.attempts = attempts
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RemoteProtocolError(
                f"{self.name}: malformed response body ({exc})", provider=self.name, attempts=attempts
            ) from None
        if chunk is not None:
            yield chunk

    async def _events(
        self, response: httpx.Response, parser: _Parser, deadline: float, attempts: int
    ) -> AsyncGenerator[ProviderChunk, None]:
        name = self.name
        events = EventSource(response).aiter_sse()
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await anext(events)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise RemoteTimeoutError(
                        f"{name}: the overall deadline of {self.options.deadline:g}s expired while streaming",
                        provider=name,
                        attempts=attempts,
                    ) from None
                except httpx.TimeoutException:
                    raise RemoteTimeoutError(
                        f"{name}: the stream stalled (no data for {self.options.timeout:g}s)",
                        provider=name,
                        attempts=attempts,
                    ) from None
                except (httpx.TransportError, httpx.StreamError) as exc:
                    raise RemoteConnectionError(
                        f"{name}: the connection broke while streaming ({type(exc).__name__})",
                        provider=name,
                        attempts=attempts,
                    ) from None
                except SSEError as exc:
                    raise RemoteProtocolError(f"{name}: {exc}", provider=name, attempts=attempts) from None
                data = event.data
                if data == "[DONE]":
                    await _drain(events, deadline)
                    break
                if not data:
                    continue
                try:
                    chunk = parser.feed(json.loads(data), delta=True)
                except RemoteError as exc:
                    exc.attempts = attempts
                    raise
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise RemoteProtocolError(
                        f"{name}: malformed stream event ({exc}): {data[:200]!r}", provider=name, attempts=attempts
                    ) from None
                if chunk is not None:
                    yield chunk
        finally:
            await events.aclose()

    # -- one HTTP request with retries ---------------------------------------------------------------------
    async def _open(self, body: dict[str, Any], stream: bool, deadline: float) -> tuple[httpx.Response, int]:
        """POST ``body`` until a 2xx arrives (headers only when streaming); returns it and the attempts made."""
        o = self.options
        try:  # the common case, without building a retry loop
            return await self._send(body, stream, deadline), 1
        except RemoteError as exc:
            if not _retryable(exc):
                exc.attempts = 1
                raise
            first: RemoteError | None = exc
        attempts = 1

        async def attempt() -> httpx.Response:
            nonlocal attempts, first
            if first is not None:  # tenacity's attempt 1 is the one already made: it decides on waiting from it
                exc, first = first, None
                raise exc
            attempts += 1
            return await self._send(body, stream, deadline)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                return float(retry_after)
            return min(o.max_backoff, o.backoff * 2.0 ** (state.attempt_number - 1)) * random.uniform(0.5, 1.0)

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= o.max_attempts:
                return True
            exc = state.outcome.exception() if state.outcome is not None else None
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None and retry_after > o.max_retry_after:
                return True
            return asyncio.get_running_loop().time() + state.upcoming_sleep >= deadline

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            logger.warning(
                "%s: attempt %d/%d failed (%s); retrying in %.2fs",
                self.name,
                state.attempt_number,
                o.max_attempts,
                f"HTTP {exc.status_code}" if isinstance(exc, RemoteStatusError) else type(exc).__name__,
                state.upcoming_sleep,
            )

        retrying = AsyncRetrying(
            stop=stop,
            wait=wait,
            retry=retry_if_exception(_retryable),
            before_sleep=before_sleep,
            sleep=_sleep,
            reraise=True,
        )
        try:
            response: httpx.Response = await retrying(attempt)
        except RemoteError as exc:
            exc.attempts = attempts
            if attempts > 1 or _retryable(exc):
                exc.args = (f"{exc.args[0]} (gave up after {attempts} attempt{'s' if attempts != 1 else ''})",)
            raise
        return response, attempts

    async def _send(self, body: dict[str, Any], stream: bool, deadline: float) -> httpx.Response:
        name = self.name
        client = self.client
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise RemoteTimeoutError(
                f"{name}: the overall deadline of {self.options.deadline:g}s expired", provider=name
            )
        request = client.build_request(
            "POST",
            self._url,
            json=body,
            headers={"Accept": "text/event-stream"} if stream else None,
        )
        try:
            async with asyncio.timeout_at(deadline):
                response = await client.send(request, stream=True)
                try:
                    if response.status_code >= 300 or response.status_code < 200:
                        await self._raise_status(response)
                    if not stream:
                        await response.aread()
                except BaseException:
                    await response.aclose()
                    raise
        except TimeoutError:
            raise RemoteTimeoutError(
                f"{name}: the overall deadline of {self.options.deadline:g}s expired", provider=name
            ) from None
        except httpx.TimeoutException as exc:
            raise RemoteTimeoutError(
                f"{name}: {type(exc).__name__} talking to {self.base_url}", provider=name
            ) from None
        except httpx.TransportError as exc:
            raise RemoteConnectionError(
                f"{name}: {type(exc).__name__} talking to {self.base_url}: {self._redact(str(exc))}", provider=name
            ) from None
        logger.debug("%s: POST %s -> %d", name, self._url, response.status_code)
        return response

    async def _raise_status(self, response: httpx.Response) -> None:
        raw = b""
        try:
            async for part in response.aiter_bytes():
                raw += part
                if len(raw) >= _MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
            pass
        text = self._redact(raw[:_MAX_ERROR_BODY].decode("utf-8", errors="replace"))
        status = response.status_code
        cls = _status_class(status)
        retry_after = _retry_after(response.headers) if cls in (RemoteRateLimitError, RemoteServerError) else None
        message = f"{self.name}: HTTP {status}: {_body_message(text) or response.reason_phrase}"
        if retry_after is not None:
            message += f" (Retry-After {retry_after:g}s)"
        raise cls(
            message,
            provider=self.name,
            status_code=status,
            request_id=response.headers.get("x-request-id"),
            body=text,
            retry_after=retry_after,
        )

    def _redact(self, text: str) -> str:
        if self._api_key is not None and self._api_key.get() in text:
            return text.replace(self._api_key.get(), "***")
        return text
