"""Value objects: the validated request, streamed chunks and the final result.

A :class:`GenerationRequest` carries every input that can change the output bytes; the cache key and the
fingerprint are derived from it (plus the resolved model identity), never from the raw call arguments.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._messages import ChatMessage, template_messages
from ._options import DEFAULT_MIN_P, DEFAULT_SEED, DEFAULT_TOP_K, DEFAULT_TOP_LOGPROBS, DEFAULT_TOP_P
from ._tools import Tool, ToolCall, ToolChoice, tool_constraint
from .structured import Constraint

if TYPE_CHECKING:
    from ._modelref import ModelRef

__all__ = [
    "Chunk",
    "Fingerprint",
    "FinishReason",
    "GenerationRequest",
    "GenerationResult",
    "ModelSpec",
    "SamplingParams",
    "Timings",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
]

# "constraint_forced": the constrained output is complete and valid, but closed early (by its shortest
# completion) so that it fits in max_new_tokens; the model alone would have written more.
# "tool_calls": the output is a tool call (``GenerationResult.tool_calls``).
FinishReason = Literal["eos", "stop_string", "length", "constraint_complete", "constraint_forced", "tool_calls"]

# defer_build: a model's validator is built on its first use, not at import (start-up time). For the same reason
# the defaults below are built with ``model_construct()`` (equal to ``Model()``, without building a validator).
_FROZEN = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class SamplingParams(BaseModel):
    """How the next token is chosen. ``temperature == 0`` is greedy (argmax) and ignores the rest."""

    model_config = _FROZEN

    temperature: float = 0.0
    seed: int = DEFAULT_SEED
    top_k: int = DEFAULT_TOP_K
    top_p: float = DEFAULT_TOP_P
    min_p: float = DEFAULT_MIN_P


class ModelSpec(BaseModel):
    """A resolved model: what the router hands to a provider."""

    model_config = _FROZEN

    provider: str = "local"
    name: str
    path: str | None = None
    sha256: str | None = None
    prompt_format: Literal["raw", "chat"] = "raw"
    base_url: str | None = None  # remote providers: the endpoint the request goes to (part of the cache key)


class GenerationRequest(BaseModel):
    """A validated generation request (model selectors still unresolved). Exactly one of ``prompt`` (a string) and
    ``messages`` (canonical chat messages) is set."""

    model_config = _FROZEN

    prompt: str | None = None
    messages: tuple[ChatMessage, ...] | None = None
    max_new_tokens: int = 512
    eos_string: str = "[EOS]"
    sampling: SamplingParams = SamplingParams.model_construct()
    logprobs: bool = False
    top_logprobs: int = DEFAULT_TOP_LOGPROBS
    model: str | None = None
    model_repo: str | None = None
    model_filename: str | None = None
    size: str | None = None
    unsafe_mode: bool = False
    strict: bool | None = None
    constraint: Constraint | None = None  # normalized schema/regex/choices/response_format
    tools: tuple[Tool, ...] | None = None  # canonical tools (see _tools)
    tool_choice: ToolChoice | None = None  # "auto" by default when tools are given; None without tools

    @property
    def generation_constraint(self) -> Constraint | None:
        """What local decoding follows: the tool-call grammar, or the structured-output constraint."""
        if self.tools is not None and self.tool_choice is not None:
            return tool_constraint(self.tools, self.tool_choice)
        return self.constraint

    def tools_wire(self) -> list[dict[str, Any]] | None:
        """The tools in OpenAI's JSON shape (what a template or a remote provider receives)."""
        return None if self.tools is None else [t.wire() for t in self.tools]

    def tool_choice_wire(self) -> Any:
        choice = self.tool_choice
        return choice if choice is None or isinstance(choice, str) else choice.wire()

    @property
    def model_ref(self) -> ModelRef:
        """What the model selectors name (parsed once per distinct selectors; see :mod:`._modelref`)."""
        from ._modelref import parse_model

        return parse_model(self.model, self.model_repo, self.model_filename, self.size)

    def chat(self) -> tuple[dict[str, Any], ...]:
        """The conversation a chat template renders: the messages, or the prompt as one user message."""
        if self.messages is not None:
            return template_messages(self.messages)
        return ({"role": "user", "content": self.prompt or ""},)

    @property
    def input_text(self) -> str:
        """The input as one string (the prompt, or the canonical messages as JSON): for hashing, never a model."""
        if self.messages is None:
            return self.prompt or ""
        return json.dumps([m.wire() for m in self.messages], sort_keys=True, ensure_ascii=False)

    @property
    def stop_string(self) -> str | None:
        """The stop string, or None when generation stops at the model's end-of-sequence token."""
        return None if self.eos_string == "[EOS]" else self.eos_string


class TopLogprob(BaseModel):
    model_config = _FROZEN

    token: str
    token_id: int
    bytes: list[int]
    logprob: float


class TokenLogprob(BaseModel):
    """One generated token with its log-probability and the most likely alternatives (OpenAI-like)."""

    model_config = _FROZEN

    token: str
    token_id: int
    bytes: list[int]
    logprob: float
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class Chunk(BaseModel):
    """A streamed piece of text. Pieces never split a UTF-8 character; joined they equal the final text."""

    model_config = _FROZEN

    text: str
    token_ids: list[int] = Field(default_factory=list)
    logprob: float | None = None
    tokens: list[TokenLogprob] | None = None
    # With tools, output that may be a call is held back; a call then arrives as one chunk that carries the calls
    # (OpenAI's streamed ``delta.tool_calls``, each call whole) beside its raw text, just before the final result.
    tool_calls: list[ToolCall] | None = None


class Usage(BaseModel):
    model_config = _FROZEN

    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_truncated: int = 0
    prompt_tokens_cached: int = 0  # prompt tokens restored from a kept prefix instead of evaluated (prefix reuse)


class Timings(BaseModel):
    """Seconds spent: waiting for a worker, evaluating the prompt, decoding, and in total."""

    model_config = _FROZEN

    queue_wait: float = 0.0
    prompt_eval: float = 0.0
    decode: float = 0.0
    total: float = 0.0


class Fingerprint(BaseModel):
    """Everything that decided the output bytes. Stable JSON via :meth:`to_json`."""

    model_config = _FROZEN

    package_version: str
    provider: str
    model: str
    model_sha256: str | None = None
    requested_model: str | None = None  # the selectors as given (replay resolves them again)
    requested_size: str | None = None
    requested_model_repo: str | None = None
    requested_model_filename: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    prompt_format: str = "raw"
    chat_template_sha256: str | None = None  # local chat models: the template the worker rendered the input with
    max_new_tokens: int
    eos_string: str
    temperature: float
    seed: int
    top_k: int | None  # None for remote providers: they are not sent
    top_p: float | None
    min_p: float | None
    logprobs: bool
    top_logprobs: int = DEFAULT_TOP_LOGPROBS
    constraint: str | None = None  # canonical constraint JSON
    constraint_sha256: str | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    inputs_sha256: str | None = None  # the cache key: a hash of every input above that can change the bytes
    base_url: str | None = None  # remote providers
    system_fingerprint: str | None = None  # what a remote provider reported, if anything
    llama_cpp_python_version: str | None = None
    llama_cpp_system_info: str | None = None
    n_ctx: int | None = None
    n_batch: int | None = None
    n_ubatch: int | None = None
    n_threads: int | None = None
    max_batch: int | None = None  # local: requests its worker may decode together (self-tested; 1 = no batching)
    kernel: str | None = None  # local: llama.cpp settings that decide the bytes (repack, flash attention, ...)
    cpu: str | None = None
    fallback: bool = False
    output_sha256: str

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


class GenerationResult(BaseModel):
    """The outcome of one generation. Immutable."""

    model_config = _FROZEN

    text: str
    token_ids: list[int] = Field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason
    tool_calls: list[ToolCall] | None = None  # the calls the output makes (finish_reason "tool_calls")
    usage: Usage = Usage.model_construct()
    cached: bool = False
    fallback: bool = False
    deterministic: bool = True  # False: a remote model, best-effort determinism only
    provider: str
    model: str
    timings: Timings = Timings.model_construct()
    fingerprint: Fingerprint

    def logprobs_dict(self) -> dict[str, Any] | None:
        """Logprobs in OpenAI's chat shape: ``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``."""
        if self.logprobs is None:
            return None
        exclude: Any = {"token_id": True, "top_logprobs": {"__all__": {"token_id"}}}
        return {"content": [lp.model_dump(exclude=exclude) for lp in self.logprobs]}


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
