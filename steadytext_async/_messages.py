"""Chat messages in OpenAI's shape: checked and made canonical once, before any work.

A message is ``{"role": ..., "content": ...}`` with role ``system``, ``developer`` (OpenAI's newer name for a system
message), ``user``, ``assistant`` or ``tool``, and content a string or a list of text parts ``{"type": "text",
"text": ...}``; an optional ``name`` is kept. An assistant message may carry ``tool_calls`` (then its content may be
null); a ``tool`` message carries the ``tool_call_id`` of an earlier call. The canonical form
(:class:`ChatMessage`) is what the cache key and the fingerprint record and what a remote provider receives, so
equal inputs give equal keys. A local chat template gets :func:`template_messages`: ``developer`` becomes
``system`` and text parts are joined with a newline (as vLLM does for templates that take string content).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from ._exceptions import InvalidRequestError
from ._tools import FunctionCall, ToolCall
from ._unicode import check_text

__all__ = ["ROLES", "ChatMessage", "TextPart", "check_messages", "template_messages"]

Role = Literal["system", "developer", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "developer", "user", "assistant", "tool")
_KEYS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id"})
MAX_MESSAGES = 4096

_FROZEN = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class TextPart(BaseModel):
    """One text part of a message's content (OpenAI's ``{"type": "text", "text": ...}``)."""

    model_config = _FROZEN

    type: Literal["text"] = "text"
    text: str


class ChatMessage(BaseModel):
    """One canonical chat message."""

    model_config = _FROZEN

    role: Role
    content: str | tuple[TextPart, ...] | None  # None: an assistant message with tool_calls only
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] | None = None
    tool_call_id: str | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Without the tool fields when they are unset: a message without tools dumps (and keys) as before."""
        data: dict[str, Any] = handler(self)
        for key in ("tool_calls", "tool_call_id"):
            if data.get(key) is None:
                data.pop(key, None)
        return data

    @property
    def text(self) -> str:
        """The content as one string (text parts joined with a newline)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)

    def wire(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this message (what a remote provider receives)."""
        body: dict[str, Any] = {"role": self.role}
        if self.content is None or isinstance(self.content, str):
            body["content"] = self.content
        else:
            body["content"] = [{"type": "text", "text": part.text} for part in self.content]
        if self.name is not None:
            body["name"] = self.name
        if self.tool_calls is not None:
            body["tool_calls"] = [call.wire() for call in self.tool_calls]
        if self.tool_call_id is not None:
            body["tool_call_id"] = self.tool_call_id
        return body


def _where(i: int) -> str:
    return f"messages[{i}]"


def _check_str(where: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidRequestError(f"{where} must be a string, got {type(value).__name__}")
    check_text(where, value)
    return str.__str__(value)


def _content(i: int, value: object) -> str | tuple[TextPart, ...]:
    where = f"{_where(i)}.content"
    if isinstance(value, str):
        return _check_str(where, value)
    if not isinstance(value, Sequence) or isinstance(value, bytes | bytearray):
        raise InvalidRequestError(f"{where} must be a string or a list of text parts, got {type(value).__name__}")
    if not value:
        raise InvalidRequestError(f"{where} is an empty list of parts")
    parts = []
    for j, part in enumerate(value):
        pwhere = f"{where}[{j}]"
        if not isinstance(part, Mapping):
            raise InvalidRequestError(f"{pwhere} must be an object, got {type(part).__name__}")
        kind = part.get("type")
        if kind != "text":
            raise InvalidRequestError(f"{pwhere} has type {kind!r}: only text parts are supported")
        extra = sorted(set(part) - {"type", "text"})
        if extra:
            raise InvalidRequestError(f"{pwhere} has unknown fields: {', '.join(map(str, extra))}")
        parts.append(TextPart.model_construct(type="text", text=_check_str(f"{pwhere}.text", part.get("text"))))
    return tuple(parts)


def _message(i: int, value: object) -> ChatMessage:
    if isinstance(value, ChatMessage):
        return value
    if isinstance(value, BaseModel):  # e.g. an openai or pydantic-ai message model
        value = value.model_dump(exclude_none=True)
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"{_where(i)} must be an object with role and content, got {type(value).__name__}")
    unknown = sorted(str(k) for k in set(value) - _KEYS)
    if unknown:
        raise InvalidRequestError(f"{_where(i)} has unsupported fields: {', '.join(unknown)}")
    role = value.get("role")
    if role not in ROLES:
        raise InvalidRequestError(f"{_where(i)}.role must be one of {', '.join(ROLES)}, got {role!r}")
    calls = _tool_calls(i, role, value.get("tool_calls"))
    if "content" not in value or value["content"] is None:
        if calls is None:
            raise InvalidRequestError(f"{_where(i)} has no content")
        content = None
    else:
        content = _content(i, value["content"])
    name = value.get("name")
    if name is not None:
        name = _check_str(f"{_where(i)}.name", name)
        if not name:
            raise InvalidRequestError(f"{_where(i)}.name must not be empty")
    call_id = value.get("tool_call_id")
    if role == "tool":
        call_id = _check_str(f"{_where(i)}.tool_call_id", call_id)
    elif call_id is not None:
        raise InvalidRequestError(f"{_where(i)}: only a tool message has a tool_call_id")
    return ChatMessage.model_construct(
        role=str.__str__(role), content=content, name=name, tool_calls=calls, tool_call_id=call_id
    )


def _tool_calls(i: int, role: object, value: object) -> tuple[ToolCall, ...] | None:
    where = f"{_where(i)}.tool_calls"
    if value is None:
        return None
    if role != "assistant":
        raise InvalidRequestError(f"{where}: only an assistant message has tool_calls")
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence) or not value:
        raise InvalidRequestError(f"{where} must be a non-empty list of calls")
    calls = []
    for j, call in enumerate(value):
        cwhere = f"{where}[{j}]"
        if isinstance(call, BaseModel):
            call = call.model_dump(exclude_none=True)
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(call, Mapping) or call.get("type", "function") != "function" or not isinstance(fn, Mapping):
            raise InvalidRequestError(
                f'{cwhere} must be {{"id", "type": "function", "function": {{"name", "arguments"}}}}'
            )
        call_id = _check_str(f"{cwhere}.id", call.get("id"))
        name = _check_str(f"{cwhere}.function.name", fn.get("name"))
        arguments = _check_str(f"{cwhere}.function.arguments", fn.get("arguments"))
        calls.append(ToolCall(id=call_id, function=FunctionCall(name=name, arguments=arguments)))
    return tuple(calls)


def _check_tool_ids(messages: tuple[ChatMessage, ...]) -> None:
    """Every tool message answers a call made earlier in the conversation."""
    seen: set[str] = set()
    for i, m in enumerate(messages):
        if m.tool_calls is not None:
            seen.update(call.id for call in m.tool_calls)
        elif m.role == "tool" and m.tool_call_id not in seen:
            raise InvalidRequestError(
                f"{_where(i)}.tool_call_id {m.tool_call_id!r:.80} matches no earlier assistant tool call"
            )


def check_messages(value: object) -> tuple[ChatMessage, ...]:
    """``value`` (a list of OpenAI-shaped messages) as canonical messages, or :class:`InvalidRequestError`."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise InvalidRequestError(f"messages must be a list of messages, got {type(value).__name__}")
    if not value:
        raise InvalidRequestError("messages must not be empty")
    if len(value) > MAX_MESSAGES:
        raise InvalidRequestError(f"messages holds {len(value)} messages; the limit is {MAX_MESSAGES}")
    checked = tuple(_message(i, m) for i, m in enumerate(value))
    _check_tool_ids(checked)
    return checked


def template_messages(messages: Sequence[ChatMessage]) -> tuple[dict[str, Any], ...]:
    """What a local chat template renders: plain dicts, ``developer`` as ``system``, parts joined; tool calls
    (OpenAI's shape) and tool call ids are kept (the worker renders them, see ``_tools``)."""
    out = []
    for m in messages:
        item = m.wire()  # keys in the same order; role and content as a template takes them
        item["role"] = "system" if m.role == "developer" else m.role
        item["content"] = m.text
        out.append(item)
    return tuple(out)


def byte_size(messages: Sequence[ChatMessage]) -> int:
    """UTF-8 bytes of all the text in ``messages`` (for the prompt size limit)."""
    return sum(
        len(m.text.encode("utf-8"))
        + len(m.role)
        + len((m.name or "").encode("utf-8"))
        + sum(len(c.function.arguments.encode("utf-8")) + len(c.function.name) for c in m.tool_calls or ())
        for m in messages
    )
