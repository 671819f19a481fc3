"""Chat messages in OpenAI's shape: checked and made canonical once, before any work.

A message is ``{"role": ..., "content": ...}`` with role ``system``, ``developer`` (OpenAI's newer name for a system
message), ``user`` or ``assistant``, and content a string or a list of text parts ``{"type": "text", "text": ...}``;
an optional ``name`` is kept. The canonical form (:class:`ChatMessage`) is what the cache key and the fingerprint
record and what a remote provider receives, so equal inputs give equal keys. A local chat template gets
:func:`template_messages`: ``developer`` becomes ``system`` and text parts are joined with a newline (as vLLM does
for templates that take string content).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ._exceptions import InvalidRequestError
from ._unicode import check_text

__all__ = ["ROLES", "ChatMessage", "TextPart", "check_messages", "template_messages"]

Role = Literal["system", "developer", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "developer", "user", "assistant")
_KEYS = frozenset({"role", "content", "name"})
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
    content: str | tuple[TextPart, ...]
    name: str | None = None

    @property
    def text(self) -> str:
        """The content as one string (text parts joined with a newline)."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)

    def wire(self) -> dict[str, Any]:
        """OpenAI's JSON shape of this message (what a remote provider receives)."""
        body: dict[str, Any] = {"role": self.role}
        if isinstance(self.content, str):
            body["content"] = self.content
        else:
            body["content"] = [{"type": "text", "text": part.text} for part in self.content]
        if self.name is not None:
            body["name"] = self.name
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
    if "content" not in value or value["content"] is None:
        raise InvalidRequestError(f"{_where(i)} has no content")
    content = _content(i, value["content"])
    name = value.get("name")
    if name is not None:
        name = _check_str(f"{_where(i)}.name", name)
        if not name:
            raise InvalidRequestError(f"{_where(i)}.name must not be empty")
    return ChatMessage.model_construct(role=str.__str__(role), content=content, name=name)


def check_messages(value: object) -> tuple[ChatMessage, ...]:
    """``value`` (a list of OpenAI-shaped messages) as canonical messages, or :class:`InvalidRequestError`."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise InvalidRequestError(f"messages must be a list of messages, got {type(value).__name__}")
    if not value:
        raise InvalidRequestError("messages must not be empty")
    if len(value) > MAX_MESSAGES:
        raise InvalidRequestError(f"messages holds {len(value)} messages; the limit is {MAX_MESSAGES}")
    return tuple(_message(i, m) for i, m in enumerate(value))


def template_messages(messages: Sequence[ChatMessage]) -> tuple[dict[str, str], ...]:
    """What a local chat template renders: plain dicts, ``developer`` as ``system``, parts joined."""
    out = []
    for m in messages:
        item = {"role": "system" if m.role == "developer" else m.role, "content": m.text}
        if m.name is not None:
            item["name"] = m.name
        out.append(item)
    return tuple(out)


def byte_size(messages: Sequence[ChatMessage]) -> int:
    """UTF-8 bytes of all the text in ``messages`` (for the prompt size limit)."""
    return sum(len(m.text.encode("utf-8")) + len(m.role) + len((m.name or "").encode("utf-8")) for m in messages)
