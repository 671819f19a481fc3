"""MockProvider: a deterministic in-memory provider, like httpx's ``MockTransport``.

No model, no worker process, no network: the client, the cache, the sync shims and the router run for real on top
of it. Register it under a name and ask for ``model="<name>:<anything>"``::

    mock = MockProvider()  # or MockProvider(lambda request: "fixed answer")
    async with AsyncSteadyText(providers={"mock": mock}) as client:
        result = await client.generate("hi", model="mock:m", max_new_tokens=4)
    assert mock.requests[0].prompt == "hi"

By default the text is a pure function of the request (prompt, seed, sampling, max_new_tokens): ``max_new_tokens``
words, each one token, cut at the stop string. A ``handler`` returns the text (one token) or a list of token
strings instead; raising from it raises from the client's call.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence

from .._models import FinishReason, GenerationRequest, ModelSpec, TokenLogprob
from .._textstream import TextAssembler
from .base import Capabilities, Provider, ProviderChunk, ProviderDone

__all__ = ["MockProvider"]

Handler = Callable[[GenerationRequest], str | Sequence[str]]


def default_tokens(request: GenerationRequest) -> list[str]:
    """``max_new_tokens`` deterministic words for ``request`` (the first one without a leading space)."""
    s = request.sampling
    seed = f"{request.input_text}\0{s.seed}\0{s.temperature}\0{s.top_k}\0{s.top_p}\0{s.min_p}".encode()
    words = []
    for i in range(request.max_new_tokens):
        digest = hashlib.sha256(seed + i.to_bytes(4, "little")).hexdigest()
        words.append(("" if i == 0 else " ") + "w" + digest[:6])
    return words


def _token_id(token: str) -> int:
    return int.from_bytes(hashlib.sha256(token.encode()).digest()[:3], "little")


class MockProvider(Provider):
    """Answers every request in memory. ``requests`` records what it was asked (in order); ``delay`` seconds are
    slept before each piece of text (to test cancellation and single-flight); ``deterministic=False`` makes it a
    best-effort provider that needs ``unsafe_mode=True``, as a remote one does."""

    name = "mock"

    def __init__(self, handler: Handler | None = None, *, delay: float = 0.0, deterministic: bool = True) -> None:
        self.handler = handler
        self.delay = delay
        self.capabilities = Capabilities(deterministic=deterministic)
        self.requests: list[GenerationRequest] = []
        self.closed = 0

    def tokens(self, request: GenerationRequest) -> list[str]:
        if self.handler is None:
            return default_tokens(request)
        out = self.handler(request)
        return [out] if isinstance(out, str) else list(out)

    async def stream(
        self, spec: ModelSpec, request: GenerationRequest, *, sse: bool | None = None
    ) -> AsyncIterator[ProviderChunk | ProviderDone]:
        self.requests.append(request)
        tokens = self.tokens(request)[: request.max_new_tokens]
        asm = TextAssembler(request.stop_string)
        for piece in asm.pieces(token.encode("utf-8") for token in tokens):
            if self.delay:
                await asyncio.sleep(self.delay)
            yield self._chunk(request, piece.text, [tokens[j] for j in piece.token_indices])
        count = asm.fed
        reason: FinishReason = "stop_string" if asm.stopped else "length" if count >= request.max_new_tokens else "eos"
        yield ProviderDone(
            finish_reason=reason,
            prompt_tokens=len(request.input_text.split()),
            completion_tokens=count,
        )

    def _chunk(self, request: GenerationRequest, text: str, tokens: list[str]) -> ProviderChunk:
        ids = [_token_id(t) for t in tokens]
        logprobs = None
        if request.logprobs:
            logprobs = [
                TokenLogprob(token=t, token_id=i, bytes=list(t.encode()), logprob=-(i % 1000) / 1000.0, top_logprobs=[])
                for t, i in zip(tokens, ids, strict=True)
            ]
        return ProviderChunk(text, ids, logprobs)

    async def aclose(self) -> None:
        self.closed += 1
