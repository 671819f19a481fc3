"""The OpenAI wire format: request bodies out, response documents and stream chunks in.

- ``max_new_tokens`` -> ``max_tokens`` or ``max_completion_tokens`` (per preset); ``eos_string`` other than
  ``"[EOS]"`` -> ``stop``; ``temperature`` and ``seed`` as given. ``top_k``/``top_p``/``min_p`` are not sent.
- logprobs -> :class:`TokenLogprob` (``token_id`` is -1: OpenAI-style APIs do not return token ids; ``bytes`` is
  taken from the response or encoded from the token text).
- ``finish_reason`` "length" -> ``length``; "stop" -> ``eos`` when no stop string was sent, else ``stop_string``
  (servers that report ``stop_reason``, like vLLM, decide it exactly). A stream that ends with ``data: [DONE]``
  but no ``finish_reason`` counts as a normal stop (as the official ``openai`` client treats it); a stream cut
  off before ``[DONE]``, or a document without ``finish_reason``, is a :class:`RemoteProtocolError`.
- Output longer than ``max_new_tokens`` × ``RemoteOptions.max_bytes_per_token`` UTF-8 bytes is a protocol error
  (not cut: cut text is not what the server answered, and would be cached as if it were).

Problems are raised as the internal :class:`WireError` / :class:`ReportedError`; ``_errors.CallErrors`` turns them
into public errors.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

from ..._exceptions import InvalidRequestError
from ..._models import FinishReason, GenerationRequest, ModelSpec, TokenLogprob, TopLogprob
from ..base import ProviderChunk, ProviderDone, ProviderInfo
from ..presets import ProviderPreset
from ._errors import ReportedError, WireError

if TYPE_CHECKING:
    from ...structured import Constraint
    from ...structured.remote import RemoteConstraint

__all__ = ["Parser", "build_body", "loads", "remote_constraint"]


def remote_constraint(constraint: Constraint | None, preset: ProviderPreset) -> RemoteConstraint | None:
    """The translation of a structured-output constraint for ``preset`` (None without a constraint).

    Presets named in ``structured.remote.PROVIDER_CAPABILITIES`` use their native feature; every other
    OpenAI-compatible server gets a plain ``response_format`` json_schema. Untranslatable constraints raise
    :class:`~steadytext_async.InvalidRequestError` before any request is sent.
    """
    if constraint is None:
        return None
    from ...structured.remote import PROVIDER_CAPABILITIES, translate

    return translate(constraint, preset.name if preset.name in PROVIDER_CAPABILITIES else "openai_compat")


def build_body(preset: ProviderPreset, spec: ModelSpec, request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
    """The JSON body sent to ``preset`` for ``request``."""
    body: dict[str, Any] = {"model": spec.name}
    chat = preset.api == "chat"
    if chat:
        if request.messages is not None:
            body["messages"] = [m.wire() for m in request.messages]
        else:
            body["messages"] = [{"role": "user", "content": request.prompt}]
    elif request.messages is not None:
        raise InvalidRequestError(
            f"{preset.name} is a completions endpoint (one prompt string); messages need a chat endpoint"
        )
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


def loads(data: str | bytes, what: str) -> Any:
    """``json.loads`` whose every failure (including nesting too deep to parse) is a :class:`WireError`."""
    excerpt = data if isinstance(data, str) else data[:4096].decode("utf-8", "replace")
    try:
        return json.loads(data)
    except RecursionError:
        raise WireError(f"malformed {what} (JSON nested too deeply)") from None
    except ValueError as exc:
        raise WireError(f"malformed {what} ({exc})", excerpt) from None


def _reported(error: object) -> str:
    """The whole message of an OpenAI-style ``error`` value (cut only after redaction)."""
    message = error.get("message") if isinstance(error, dict) else error
    if isinstance(message, str) and message:
        return message
    try:
        return json.dumps(error)
    except (TypeError, ValueError, RecursionError):
        return "(unreadable error object)"


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
    return [
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
        for token, value, top in zip(tokens, values, tops, strict=True)
    ]


class Parser:
    """Turns response objects or stream chunks (chat or completions) into provider events."""

    def __init__(self, request: GenerationRequest, chat: bool, *, max_bytes_per_token: int) -> None:
        self.request = request
        self.chat = chat
        self.budget = request.max_new_tokens * max_bytes_per_token
        self.finish_reason: str | None = None
        self.stop_reason: object = None
        self.has_stop_reason = False
        self.saw_done = False  # the stream's "data: [DONE]" arrived
        self.usage: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.got_text = False
        self.text_bytes = 0
        self.logprob_tokens = 0

    def feed(self, payload: Any, *, delta: bool) -> ProviderChunk | None:
        """One response document or stream chunk; raises WireError/ReportedError."""
        try:
            return self._feed(payload, delta)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            what = "stream event" if delta else "response body"
            try:
                excerpt = json.dumps(payload)[:4096] if delta else None
            except (TypeError, ValueError, RecursionError):
                excerpt = None
            raise WireError(f"malformed {what} ({type(exc).__name__}: {exc})", excerpt) from None

    def _feed(self, payload: Any, delta: bool) -> ProviderChunk | None:
        if not isinstance(payload, dict):
            raise ValueError("not a JSON object")
        error = payload.get("error")
        if error is not None:
            raise ReportedError(_reported(error))
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
        self.text_bytes += len(text.encode("utf-8", "surrogatepass"))
        if self.text_bytes > self.budget:
            raise WireError(
                f"the output passed {self.budget} bytes, more than max_new_tokens={self.request.max_new_tokens} "
                "tokens can hold (the server ignored the token limit)"
            )
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
        """The final event; raises WireError/ReportedError when the response was incomplete."""
        reason = self.finish_reason
        if reason is None:
            if not self.saw_done:
                raise WireError("the response ended without a finish_reason")
            reason = "stop"  # [DONE] without a finish_reason: a complete stream (as the openai client reads it)
        if self.request.logprobs and self.got_text and not self.logprob_tokens:
            raise WireError("logprobs were requested but the response has none")
        usage = self.usage
        try:
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or self.logprob_tokens)  # 0: not reported
        except (TypeError, ValueError):
            raise WireError("malformed usage numbers") from None
        return ProviderDone(
            finish_reason=self._finish(reason),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            info=cast(ProviderInfo, self.info),  # deterministic or not: the provider's capabilities say
        )

    def _finish(self, reason: object) -> FinishReason:
        if reason in ("length", "max_tokens", "model_length"):
            return "length"
        if reason in ("stop", "eos", "end_turn", "stop_sequence"):
            if self.request.stop_string is None:
                return "eos"
            if self.has_stop_reason:
                return "stop_string" if isinstance(self.stop_reason, str) else "eos"
            return "eos" if reason == "eos" else "stop_string"
        raise ReportedError(f"stopped with unsupported finish_reason {str(reason)[:100]!r}")
