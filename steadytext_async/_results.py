"""Building results: a provider's events (or fallback text) -> :class:`Chunk` and the final
:class:`GenerationResult` with its :class:`Fingerprint` (what decided the bytes)."""

from __future__ import annotations

from ._models import (
    Chunk,
    Fingerprint,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    ModelSpec,
    Timings,
    TokenLogprob,
    Usage,
    sha256_text,
)
from ._textstream import TextAssembler
from ._tools import ToolCall
from ._version import __version__
from .providers.base import ProviderChunk, ProviderDone, ProviderInfo

__all__ = ["CallHold", "chunk", "fallback", "fingerprint", "from_done", "result"]


def chunk(event: ProviderChunk) -> Chunk:
    logprob = sum(t.logprob for t in event.tokens) if event.tokens is not None else None
    return Chunk(text=event.text, token_ids=event.token_ids, logprob=logprob, tokens=event.tokens)


class CallHold:
    """The stream shape of a request with tools: pieces that may be a call are held back, so a consumer never sees
    call markup as text. A call is released as one chunk carrying the calls (``Chunk.tool_calls``) with the held
    raw text (the pieces still join to ``result.text``); held text that was not a call is released as one plain
    chunk. Held: everything under ``required`` or a named tool, and under ``auto`` an output whose first piece
    starts with ``<`` (plain text may not, see :mod:`._tools`)."""

    def __init__(self, request: GenerationRequest) -> None:
        choice = request.tool_choice
        self.active = request.tools is not None and choice != "none"
        self.always = self.active and choice != "auto"
        self.started = False
        self.held: list[ProviderChunk] = []

    def take(self, event: ProviderChunk) -> bool:
        """Whether ``event`` is held back (else the caller yields it now)."""
        if not self.active:
            return False
        if not self.always and not self.held:
            if self.started or not event.text:
                return False
            self.started = True
            if not event.text.startswith("<"):
                return False
        self.held.append(event)
        return True

    def release(self, calls: list[ToolCall] | None) -> Chunk | None:
        """The chunk for what was held (and the calls, remote ones included), or None when there is nothing."""
        if not self.held and not calls:
            return None
        logged = self.held and all(e.tokens is not None for e in self.held)
        tokens = [t for e in self.held for t in e.tokens or ()] if logged else None
        held = ProviderChunk("".join(e.text for e in self.held), [i for e in self.held for i in e.token_ids], tokens)
        return chunk(held).model_copy(update={"tool_calls": list(calls) if calls else None})


def fingerprint(
    request: GenerationRequest,
    spec: ModelSpec,
    provider: str,
    *,
    text: str,
    info: ProviderInfo,
    key: str | None,
    deterministic: bool,
    fallback: bool,
) -> Fingerprint:
    """Every input that decided ``text`` (``key``: the cache key, recorded as inputs_sha256)."""
    s = request.sampling
    remote = not deterministic  # a best-effort provider does not take our top_k/top_p/min_p
    c = request.constraint
    return Fingerprint(
        package_version=__version__,
        provider=provider,
        model=spec.name,
        model_sha256=spec.sha256,
        requested_model=request.model,
        requested_size=request.size,
        requested_model_repo=request.model_repo,
        requested_model_filename=request.model_filename,
        prompt=request.prompt,
        messages=list(request.messages) if request.messages is not None else None,
        prompt_format=spec.prompt_format,
        chat_template_sha256=info.get("chat_template_sha256") if spec.prompt_format == "chat" else None,
        max_new_tokens=request.max_new_tokens,
        eos_string=request.eos_string,
        temperature=s.temperature,
        seed=s.seed,
        top_k=None if remote else s.top_k,
        top_p=None if remote else s.top_p,
        min_p=None if remote else s.min_p,
        base_url=spec.base_url,
        system_fingerprint=info.get("remote_system_fingerprint"),
        logprobs=request.logprobs,
        top_logprobs=request.top_logprobs,
        constraint=c.canonical if c is not None else None,
        constraint_sha256=c.sha256 if c is not None else None,
        tools=list(request.tools) if request.tools is not None else None,
        tool_choice=request.tool_choice,
        inputs_sha256=key,
        llama_cpp_python_version=info.get("llama_cpp_python_version"),
        llama_cpp_system_info=info.get("llama_cpp_system_info"),
        n_ctx=info.get("n_ctx"),
        n_batch=info.get("n_batch"),
        n_ubatch=info.get("n_ubatch"),
        n_threads=info.get("n_threads"),
        max_batch=info.get("max_batch"),
        kernel=info.get("kernel"),
        cpu=info.get("cpu"),
        fallback=fallback,
        output_sha256=sha256_text(text),
    )


def result(
    request: GenerationRequest,
    spec: ModelSpec,
    provider: str,
    *,
    text: str,
    token_ids: list[int],
    logprobs: list[TokenLogprob] | None,
    finish_reason: FinishReason,
    usage: Usage,
    timings: Timings,
    info: ProviderInfo,
    key: str | None,
    deterministic: bool = True,
    fallback: bool = False,
    tool_calls: list[ToolCall] | None = None,
) -> GenerationResult:
    return GenerationResult(
        text=text,
        token_ids=token_ids,
        logprobs=logprobs,
        finish_reason=finish_reason,
        tool_calls=tool_calls,
        usage=usage,
        fallback=fallback,
        deterministic=deterministic,
        provider=provider,
        model=spec.name,
        timings=timings,
        fingerprint=fingerprint(
            request,
            spec,
            provider,
            text=text,
            info=info,
            key=key,
            deterministic=deterministic,
            fallback=fallback,
        ),
    )


def from_done(
    request: GenerationRequest,
    spec: ModelSpec,
    provider: str,
    done: ProviderDone,
    *,
    text: str,
    token_ids: list[int],
    logprobs: list[TokenLogprob] | None,
    total: float,
    key: str | None,
    deterministic: bool,
) -> GenerationResult:
    """The result of a provider's generation, from its final event (``total``: seconds since the call began)."""
    return result(
        request,
        spec,
        provider,
        text=text,
        token_ids=token_ids,
        logprobs=logprobs,
        finish_reason=done.finish_reason,
        usage=Usage(
            prompt_tokens=done.prompt_tokens,
            completion_tokens=done.completion_tokens,
            prompt_tokens_truncated=done.prompt_tokens_truncated,
            prompt_tokens_cached=done.prompt_tokens_cached,
        ),
        timings=Timings(
            queue_wait=done.queue_wait,
            prompt_eval=done.prompt_eval,
            decode=done.decode,
            total=total,
        ),
        info=done.info,
        key=key,
        deterministic=deterministic,
        tool_calls=done.tool_calls,
    )


def fallback(request: GenerationRequest, name: str, text: TextAssembler, *, total: float) -> GenerationResult:
    """The result of the deterministic fallback text (``name``: the model that could not be used)."""
    return result(
        request,
        ModelSpec(provider="fallback", name=name),
        "fallback",
        text=text.text,
        token_ids=[],
        logprobs=None,
        finish_reason="stop_string" if text.stopped else "length",
        usage=Usage(completion_tokens=text.fed),
        timings=Timings(total=total),
        info=ProviderInfo(),
        key=None,
        fallback=True,
    )
