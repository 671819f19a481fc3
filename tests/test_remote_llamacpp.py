"""Against a real OpenAI-compatible server (llama-cpp-python's, on the embedded model, 127.0.0.1): our router's
results must match what the official ``openai`` async client gets for the same request.

llama-cpp-python reuses the KV cache of the previous request's prompt, and the logits of a prompt evaluated in one
batch differ in the last bits from those of a prompt resumed from the cache; near-ties can then flip. So every
comparison first sends the same prompt once (a warm-up of two tokens: after a one-token request the next one still
differs), then the reference, then ours: both then start from the same cache state. Logprobs are slow on this
server (it sorts the 262k vocabulary in Python per token), so those tests ask for few tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import pytest_asyncio
from _remote_servers import LlamaServer

from steadytext_async import AsyncSteadyText, Chunk, GenerationResult
from steadytext_async._models import ModelSpec
from steadytext_async._registry import embedded_model
from steadytext_async._validate import build_request
from steadytext_async.providers.base import ProviderChunk, ProviderDone
from steadytext_async.providers.openai_compat import OpenAICompatProvider
from steadytext_async.providers.presets import get_preset, register_provider, unregister_provider

pytestmark = pytest.mark.model  # drives worker processes (see conftest: one asyncio loop)

PROMPT = "The capital of France is"
MAX = 12
MAX_LP = 5  # tokens when logprobs are requested


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    spec = embedded_model()
    assert spec.path is not None
    server = LlamaServer(Path(spec.path), tmp_path_factory.mktemp("llama") / "server.log")
    server.start()
    register_provider("llamacpp-test", base_url=server.url, api="completions", replace=True)
    try:
        yield server
    finally:
        unregister_provider("llamacpp-test")
        server.stop()


@pytest_asyncio.fixture(loop_scope="function")  # its connections belong to the test's loop
async def oai(llama_server: LlamaServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=llama_server.url, api_key="unused", max_retries=0, timeout=120)
    yield client
    await client.close()


@pytest.fixture
async def ours(llama_server: LlamaServer) -> AsyncIterator[AsyncSteadyText]:
    async with AsyncSteadyText() as client:
        yield client


async def warm_up(oai: openai.AsyncOpenAI, prompt: str = PROMPT) -> None:
    """Leave ``prompt`` in the server's KV cache, so the next two requests start from the same state."""
    await oai.completions.create(model="gemma", prompt=prompt, max_tokens=2, temperature=0)


async def reference_completion(oai: openai.AsyncOpenAI, **kw: Any) -> Any:
    await warm_up(oai)
    return await oai.completions.create(model="gemma", prompt=PROMPT, **kw)


@pytest.mark.parametrize(("temperature", "seed"), [(0.0, 42), (0.9, 7)])
async def test_generate_matches_openai_client(
    oai: openai.AsyncOpenAI, ours: AsyncSteadyText, temperature: float, seed: int
) -> None:
    ref = await reference_completion(oai, max_tokens=MAX, temperature=temperature, seed=seed)
    result = await ours.generate(
        PROMPT, model="llamacpp-test:gemma", unsafe_mode=True, max_new_tokens=MAX, temperature=temperature, seed=seed
    )
    assert result.text == ref.choices[0].text and result.text.strip()
    assert ref.choices[0].finish_reason == "length" and result.finish_reason == "length"
    assert (result.provider, result.model, result.fallback) == ("llamacpp-test", "gemma", False)
    # llama-cpp-python's stream carries no usage (it ignores stream_options): 0 means "not reported"
    assert ref.usage.completion_tokens == MAX and result.usage.completion_tokens in (0, MAX)
    assert (result.fingerprint.prompt_format, result.fingerprint.seed) == ("raw", seed)


async def test_stream_matches_openai_client(oai: openai.AsyncOpenAI, ours: AsyncSteadyText) -> None:
    await warm_up(oai)
    ref_stream = await oai.completions.create(model="gemma", prompt=PROMPT, max_tokens=MAX, temperature=0, stream=True)
    ref_pieces = [c.choices[0].text async for c in ref_stream if c.choices and c.choices[0].text]
    items = [
        item async for item in ours.stream(PROMPT, model="llamacpp-test:gemma", unsafe_mode=True, max_new_tokens=MAX)
    ]
    *chunks, result = items
    assert all(isinstance(c, Chunk) for c in chunks) and isinstance(result, GenerationResult)
    assert [c.text for c in chunks] == ref_pieces and len(ref_pieces) == MAX
    assert result.text == "".join(ref_pieces) and result.finish_reason == "length"


async def test_logprobs_match_openai_client(oai: openai.AsyncOpenAI, ours: AsyncSteadyText) -> None:
    ref = await reference_completion(oai, max_tokens=MAX_LP, temperature=0, seed=42, logprobs=5)
    result = await ours.generate(
        PROMPT, model="llamacpp-test:gemma", unsafe_mode=True, max_new_tokens=MAX_LP, return_logprobs=True
    )
    lp = ref.choices[0].logprobs
    assert result.text == ref.choices[0].text
    assert result.logprobs is not None and [t.token for t in result.logprobs] == lp.tokens
    assert [t.logprob for t in result.logprobs] == pytest.approx(lp.token_logprobs, abs=1e-5)
    assert "".join(t.token for t in result.logprobs) == result.text
    for ours_token, ref_top in zip(result.logprobs, lp.top_logprobs, strict=True):
        assert {t.token: t.logprob for t in ours_token.top_logprobs} == pytest.approx(ref_top, abs=1e-5)
        assert ours_token.bytes == list(ours_token.token.encode())
    assert result.logprobs_dict() is not None
    assert result.usage.completion_tokens == MAX_LP  # counted from the logprobs when the stream reports no usage


async def test_stop_string(oai: openai.AsyncOpenAI, ours: AsyncSteadyText) -> None:
    prompt = "Count: 1, 2, 3,"
    kw: dict[str, Any] = {"max_tokens": 16, "temperature": 0, "stop": [" 6"]}
    await warm_up(oai, prompt)
    ref = await oai.completions.create(model="gemma", prompt=prompt, **kw)
    result = await ours.generate(
        prompt, model="llamacpp-test:gemma", unsafe_mode=True, max_new_tokens=16, eos_string=" 6"
    )
    assert result.text == ref.choices[0].text == " 4, 5,"
    assert (ref.choices[0].finish_reason, result.finish_reason) == ("stop", "stop_string")


async def test_chat_api_through_the_preset(
    llama_server: LlamaServer, oai: openai.AsyncOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``llamacpp:`` preset (chat API), its base URL from STEADYTEXT_LLAMACPP_BASE_URL, logprobs in chat shape.
    A client reads the environment when it is made, so this one is made after the variable is set."""
    monkeypatch.setenv("STEADYTEXT_LLAMACPP_BASE_URL", llama_server.url)
    messages: Any = [{"role": "user", "content": PROMPT}]
    kw: dict[str, Any] = {"max_tokens": MAX_LP, "temperature": 0, "seed": 42, "logprobs": True, "top_logprobs": 5}
    await oai.chat.completions.create(model="gemma", messages=messages, max_tokens=2, temperature=0)
    ref = await oai.chat.completions.create(model="gemma", messages=messages, **kw)
    async with AsyncSteadyText(cache_disabled=True) as ours:
        result = await ours.generate(
            PROMPT, model="llamacpp:gemma", unsafe_mode=True, max_new_tokens=MAX_LP, return_logprobs=True
        )
    choice = ref.choices[0]
    assert result.text == choice.message.content and result.text.strip()
    assert result.fingerprint.prompt_format == "chat" and result.provider == "llamacpp"
    assert choice.logprobs is not None and choice.logprobs.content is not None
    assert result.logprobs is not None
    assert [(t.token, t.logprob) for t in result.logprobs] == [(t.token, t.logprob) for t in choice.logprobs.content]
    expected_finish = {"stop": "eos", "length": "length"}[choice.finish_reason]
    assert result.finish_reason == expected_finish


async def test_non_streaming_path_matches(oai: openai.AsyncOpenAI) -> None:
    """The provider's one-document (``sse=False``) path on the real server."""
    ref = await reference_completion(oai, max_tokens=MAX, temperature=0, seed=42)
    provider = OpenAICompatProvider(get_preset("llamacpp-test", {}))
    request = build_request(PROMPT, max_new_tokens=MAX)
    try:
        events = [
            e async for e in provider.stream(ModelSpec(provider="llamacpp-test", name="gemma"), request, sse=False)
        ]
    finally:
        await provider.aclose()
    chunk, done = events
    assert isinstance(chunk, ProviderChunk) and isinstance(done, ProviderDone)
    assert chunk.text == ref.choices[0].text
    assert (done.finish_reason, done.completion_tokens) == ("length", MAX)
