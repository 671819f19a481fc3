"""OpenAI wire format <-> SDK calls: request bodies to ``generate()`` keyword arguments, results to responses.

Defaults are the SDK's, not OpenAI's, so a request with only ``prompt`` gives the same bytes (and the same cache
entry) as ``generate(prompt)``: ``temperature`` 0, ``seed`` 42, ``max_tokens`` 512. Parameters that would change
the output but that the SDK does not implement (``n``, ``top_p``, penalties, ``logit_bias``...) are refused with 400
rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any, Literal

from .._exceptions import InvalidRequestError, UnsafeModeRequiredError
from .._modelref import parse_model
from .._models import Chunk, GenerationResult, TokenLogprob
from .._registry import REGISTRY, SIZES

__all__ = ["ParsedRequest", "parse_request", "response_body", "stream_chunk"]

Kind = Literal["completion", "chat"]
DEFAULT_MODEL = "default"
MAX_TOP_LOGPROBS = 5  # the SDK returns the 5 most likely alternatives per token

_COMMON = {"model", "max_tokens", "temperature", "seed", "stop", "stream", "stream_options", "logprobs", "user"}
_OURS = {"regex", "choices", "schema", "response_format", "eos_string", "max_new_tokens"}
_HARMLESS = {"metadata", "store", "service_tier", "parallel_tool_calls"}
_KNOWN = {
    "completion": _COMMON | _OURS | _HARMLESS | {"prompt"},
    "chat": _COMMON | _OURS | _HARMLESS | {"messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice"},
}
# parameters accepted only at their neutral value
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "best_of": (None, 1),
    "echo": (None, False),
    "suffix": (None, ""),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "top_p": (None,),
    "functions": (None, []),
    "function_call": (None, "none"),
}


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedRequest:
    kind: Kind
    model: str  # as named in the request (echoed back)
    prompt: str | None  # completions: the prompt; chat: None (the messages are in ``kwargs``)
    kwargs: dict[str, Any]  # for AsyncSteadyText.generate / stream
    stream: bool
    include_usage: bool
    top_logprobs: int | None  # None: no logprobs in the response


def _input(kind: Kind, body: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(the prompt, or None and ``{"messages": [...]}`` for chat): the SDK checks the messages themselves."""
    if kind == "completion":
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise InvalidRequestError("prompt must be a string (batches of prompts are not supported)")
        return prompt, {}
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequestError("messages must be a list of messages")
    return None, {"messages": messages}


def _model(model: object, allow_remote: bool) -> dict[str, Any]:
    """The SDK's model selectors for the request's ``model`` field."""
    if model is None or model == DEFAULT_MODEL:
        return {}
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("model must be a non-empty string")
    if model in SIZES:
        return {"size": model}
    if model in REGISTRY:
        return {"model": model}
    if parse_model(model).kind == "file":
        raise InvalidRequestError(f"serve does not load model files named by a request: {model!r}")
    if ":" in model:
        if not allow_remote:
            raise UnsafeModeRequiredError(
                f"model {model!r} is remote; this server was started without --allow-remote, "
                "and a request cannot enable remote models"
            )
        return {"model": model, "unsafe_mode": True}
    return {"model": model}  # unknown: the SDK raises ModelNotFoundError


def _stop(body: dict[str, Any]) -> dict[str, Any]:
    stop, eos = body.get("stop"), body.get("eos_string")
    if isinstance(stop, list):
        if len(stop) > 1:
            raise InvalidRequestError("only one stop string is supported")
        stop = stop[0] if stop else None
    if stop is not None and eos is not None:
        raise InvalidRequestError("pass either stop or eos_string, not both")
    value = stop if stop is not None else eos
    return {} if value is None else {"eos_string": value}


def _max_tokens(kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
    names = ["max_tokens", "max_new_tokens"] + (["max_completion_tokens"] if kind == "chat" else [])
    given = [(n, body[n]) for n in names if body.get(n) is not None]
    if len(given) > 1:
        raise InvalidRequestError(f"pass only one of {', '.join(n for n, _ in given)}")
    return {"max_new_tokens": given[0][1]} if given else {}


def _logprobs(kind: Kind, body: dict[str, Any]) -> int | None:
    """How many alternatives per token to return, or None for no logprobs."""
    logprobs = body.get("logprobs")
    if kind == "completion":
        top = None if logprobs is None else logprobs
        if isinstance(top, bool) or (top is not None and not isinstance(top, int)):
            raise InvalidRequestError("logprobs must be an integer (the number of alternatives per token)")
    else:
        if logprobs not in (None, True, False):
            raise InvalidRequestError("logprobs must be a boolean")
        top = body.get("top_logprobs") or 0 if logprobs else None
        if body.get("top_logprobs") is not None and not logprobs:
            raise InvalidRequestError("top_logprobs requires logprobs: true")
    if top is not None and not (isinstance(top, int) and 0 <= top <= MAX_TOP_LOGPROBS):
        raise InvalidRequestError(f"at most {MAX_TOP_LOGPROBS} alternatives per token are available")
    return top


def parse_request(kind: Kind, body: object, *, allow_remote: bool) -> ParsedRequest:
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    if "unsafe_mode" in body:
        raise UnsafeModeRequiredError(
            "unsafe_mode cannot be set by a request; start the server with --allow-remote to serve remote models"
        )
    for name, neutral in _NEUTRAL.items():
        if name in body and body[name] not in neutral:
            raise InvalidRequestError(f"{name}={body[name]!r} is not supported by steadytext serve")
    unknown = sorted(set(body) - _KNOWN[kind] - set(_NEUTRAL))
    if unknown:
        raise InvalidRequestError(f"unknown parameters: {', '.join(unknown)}")
    top = _logprobs(kind, body)
    prompt, given = _input(kind, body)
    kwargs: dict[str, Any] = {
        **given,
        **_model(body.get("model"), allow_remote),
        **_max_tokens(kind, body),
        **_stop(body),
        **{k: body[k] for k in ("seed", "temperature", "regex", "choices", "schema") if body.get(k) is not None},
    }
    if kind == "chat":  # the SDK checks them (a completion with tools is an unknown parameter)
        kwargs.update({k: body[k] for k in ("tools", "tool_choice") if body.get(k) is not None})
    if body.get("response_format") is not None:
        kwargs["response_format"] = body["response_format"]
    if top is not None:
        kwargs["return_logprobs"] = True
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidRequestError("stream_options must be an object")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("stream must be a boolean")
    return ParsedRequest(
        kind=kind,
        model=str(body.get("model") or DEFAULT_MODEL),
        prompt=prompt,
        kwargs=kwargs,
        stream=stream,
        include_usage=bool(options.get("include_usage")),
        top_logprobs=top,
    )


# -- responses -------------------------------------------------------------------------------------------------


def _finish(result: GenerationResult) -> str:
    if result.tool_calls:
        return "tool_calls"
    return "length" if result.finish_reason == "length" else "stop"


def _chat_logprobs(tokens: list[TokenLogprob], top: int) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "bytes": t.bytes,
                "top_logprobs": [
                    {"token": a.token, "logprob": a.logprob, "bytes": a.bytes} for a in t.top_logprobs[:top]
                ],
            }
            for t in tokens
        ]
    }


def _completion_logprobs(tokens: list[TokenLogprob], top: int, offset: int) -> dict[str, Any]:
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.token)
    return {
        "tokens": [t.token for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{a.token: a.logprob for a in t.top_logprobs[:top]} for t in tokens],
        "text_offset": offsets,
    }


def logprobs_field(req: ParsedRequest, tokens: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
    if req.top_logprobs is None or tokens is None:
        return None
    if req.kind == "chat":
        return _chat_logprobs(tokens, req.top_logprobs)
    return _completion_logprobs(tokens, req.top_logprobs, offset)


def extension(result: GenerationResult) -> dict[str, Any]:
    """Our own fields: everything needed to check the bytes and replay the generation."""
    return {
        "finish_reason": result.finish_reason,
        "token_ids": result.token_ids,
        "cached": result.cached,
        "fallback": result.fallback,
        "fingerprint": result.fingerprint.model_dump(mode="json"),
    }


def usage(result: GenerationResult) -> dict[str, Any]:
    u = result.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.prompt_tokens_cached},
    }


class Envelope:
    """The fields every response and chunk of one request share."""

    def __init__(self, req: ParsedRequest) -> None:
        prefix = "chatcmpl-" if req.kind == "chat" else "cmpl-"
        self.req = req
        self.id = prefix + uuid.uuid4().hex
        self.created = int(time.time())

    def base(self, obj: str, result: GenerationResult | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "object": obj, "created": self.created, "model": self.req.model}
        if result is not None:
            body["system_fingerprint"] = result.fingerprint.inputs_sha256
        return body


def response_body(env: Envelope, result: GenerationResult) -> dict[str, Any]:
    req = env.req
    lp = logprobs_field(req, result.logprobs)
    if req.kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": result.text}
        if result.tool_calls:
            message.update(content=None, tool_calls=[call.wire() for call in result.tool_calls])
        choice: dict[str, Any] = {"index": 0, "message": message}
        obj = "chat.completion"
    else:
        choice, obj = {"index": 0, "text": result.text}, "text_completion"
    choice.update(logprobs=lp, finish_reason=_finish(result))
    body = env.base(obj, result)
    body.update(choices=[choice], usage=usage(result), steadytext=extension(result))
    return body


def stream_chunk(env: Envelope, item: Chunk | GenerationResult | None, offset: int = 0) -> dict[str, Any]:
    """One SSE chunk: ``None`` is the chat role preamble, a :class:`Chunk` a piece, the result the final chunk."""
    req = env.req
    chat = req.kind == "chat"
    obj = "chat.completion.chunk" if chat else "text_completion"
    choice: dict[str, Any] = {"index": 0}
    result = item if isinstance(item, GenerationResult) else None
    if item is None:
        choice.update(delta={"role": "assistant", "content": ""}, logprobs=None, finish_reason=None)
    elif isinstance(item, Chunk):
        lp = logprobs_field(req, item.tokens, offset)
        if chat and item.tool_calls:  # the SDK held the call back: OpenAI's delta shape, each call whole
            choice["delta"] = {"tool_calls": [{"index": i, **call.wire()} for i, call in enumerate(item.tool_calls)]}
        elif chat:
            choice["delta"] = {"content": item.text}
        else:
            choice["text"] = item.text
        choice.update(logprobs=lp, finish_reason=None)
    else:
        if chat:
            choice["delta"] = {}
        else:
            choice["text"] = ""
        choice.update(logprobs=None, finish_reason=_finish(item))
    body = env.base(obj, result)
    body["choices"] = [choice]
    if result is not None:
        body["steadytext"] = extension(result)
    return body


def usage_chunk(env: Envelope, result: GenerationResult) -> dict[str, Any]:
    obj = "chat.completion.chunk" if env.req.kind == "chat" else "text_completion"
    body = env.base(obj, result)
    body.update(choices=[], usage=usage(result))
    return body
