"""Byte-level determinism of the embedded models: golden hashes and every way of asking the same question."""

import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import steadytext_async as st
from steadytext_async._options import ModelOptions
from steadytext_async._registry import EMBEDDED, GEMMA_BASE

pytestmark = pytest.mark.model  # drives worker processes (see conftest: one asyncio loop)

# Golden outputs (max_new_tokens=24, greedy) pinned to each GGUF's sha256, with the worker's kernel settings (CPU
# repack, flash attention and ggml's tiled K-quant matmul off; see _worker/child/llama.py). They are checked against
# llama-cpp-python's own greedy decode (tests/_oracle.py) in the two *_oracle tests below.
#
# Raw continuation: the base gemma-3-270m, by name.
GOLDEN_MODEL_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GOLDEN = {
    "Once upon a time": "22b9d492f899f895bc0fded790fb219672d2357481ddf9ee7ec94a5c56f60d7d",
    "The capital of France is": "d102c87892ac8123a804df9420923789e0545c938480e38e66f32d80fc7ed4c7",
    "def fibonacci(n):": "7df09e61495c4faf37bb75ee1241fcb0ca1f0d2e1cd6a72e8b4f253479340eec",
    "": "8e557973aa8742b393aeae912e26b0d4e6ce9a9d1098bb6992970a6a4b18389b",
    "Write about 🤖 and 人工智能": "5b3a89923c99fe0e1161c0c9557ee673644aa5ca9722c37053583c3b1b04127e",
    "Line one\nLine two\nLine three": "ffd6f51795796c99ac52e8c358577cf24e34ac13d1a2a997b4660675f63a3a23",
}
GEMMA: ModelOptions = {"model": GEMMA_BASE.name}
PROMPT = "The capital of France is"

# Chat: the default SmolLM2-135M-Instruct through its GGUF's ChatML template (prompts as one user message).
CHAT_MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CONVERSATIONS: dict[str, list[dict[str, Any]]] = {
    "haiku": [{"role": "user", "content": "Write a haiku about programming"}],
    "capital": [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
    "system": [
        {"role": "system", "content": "You are a geography teacher. Answer in one short sentence."},
        {"role": "user", "content": "What is the capital of Italy?"},
    ],
    "multi-turn": [
        {"role": "system", "content": "You are a geography teacher. Answer in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "And the capital of Italy?"},
    ],
    "unicode": [{"role": "user", "content": "Translate to French: 🤖 robots are friends, 人工智能"}],
    "france": [{"role": "user", "content": PROMPT}],  # what a plain prompt renders as
}
CHAT_GOLDEN = {
    # 'In the realm of programming lies a delicate balance between creativity and discipline.'
    "haiku": "746b14f5bb388d5a636552e48f5b989ee067ab9c173fb8a9b40e9153e2bb8ba0",
    # 'The capital of France is Paris.'
    "capital": "a1b7eb2ee7a6aded8dda4e6cf30826f5afffb28a5597ee9389e91eb326d4e319",
    # 'The capital of Italy is Rome.' (with and without the earlier turn about France)
    "system": "6262e19362c7c336b3d78321d1ea18d7660b9fb46f1f311964bc2498eb07cb08",
    "multi-turn": "6262e19362c7c336b3d78321d1ea18d7660b9fb46f1f311964bc2498eb07cb08",
    "unicode": "d66f23b544225ef721c28c3bc8f25ee82b58e8a196ad6999e15d6d6c897a9246",
    "france": "ea873347fa4bed23844bcd95101262286b85c3c6aec9687b0147b47add627e6a",
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def _oracle(path: str | None, items: Any, *flags: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("_oracle.py")),
        str(path),
        "24",
        *flags,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(json.dumps(items).encode()), 300)
    assert proc.returncode == 0
    return json.loads(stdout)


async def test_golden_hashes_match_the_llama_cpp_python_oracle(gemma_spec: st.ModelSpec) -> None:
    """An independent decode of the same GGUF (tests/_oracle.py: ``Llama.generate``, greedy) gives the goldens."""
    got = await _oracle(gemma_spec.path, list(GOLDEN))
    assert {p: sha(r["text"]) for p, r in got.items()} == GOLDEN
    for prompt in (PROMPT, "Write about 🤖 and 人工智能"):
        ours = await st.default_client().generate(prompt, max_new_tokens=24, **GEMMA)
        assert ours.token_ids == got[prompt]["token_ids"]


async def test_chat_goldens_match_create_chat_completion(model_spec: st.ModelSpec) -> None:
    """llama-cpp-python's own greedy ``create_chat_completion`` (its Jinja2 formatter, the GGUF's template) gives the
    chat goldens, token for token."""
    got = await _oracle(model_spec.path, list(CONVERSATIONS.values()), "--chat")
    assert {name: sha(r["text"]) for name, r in zip(CONVERSATIONS, got, strict=True)} == CHAT_GOLDEN
    client = st.default_client()
    for (_name, conv), reference in zip(CONVERSATIONS.items(), got, strict=True):
        ours = await client.generate(messages=conv, max_new_tokens=24)
        assert ours.token_ids == reference["token_ids"] and ours.text == reference["text"]


def test_golden_models_are_the_embedded_ones(model_spec: st.ModelSpec, gemma_spec: st.ModelSpec) -> None:
    assert GEMMA_BASE.sha256 == GOLDEN_MODEL_SHA256 == gemma_spec.sha256
    assert EMBEDDED.sha256 == CHAT_MODEL_SHA256 == model_spec.sha256


@pytest.mark.parametrize("prompt", list(GOLDEN))
async def test_golden_hashes(prompt: str) -> None:
    result = await st.default_client().generate(prompt, max_new_tokens=24, **GEMMA)
    assert result.fingerprint.model_sha256 == GOLDEN_MODEL_SHA256 and result.fingerprint.prompt_format == "raw"
    assert not result.fallback
    assert result.usage.completion_tokens == 24 and result.finish_reason == "length"
    assert sha(result.text) == GOLDEN[prompt], repr(result.text)
    assert result.fingerprint.output_sha256 == GOLDEN[prompt]


@pytest.mark.parametrize("name", list(CONVERSATIONS))
async def test_chat_golden_hashes(name: str) -> None:
    result = await st.default_client().generate(messages=CONVERSATIONS[name], max_new_tokens=24)
    assert result.fingerprint.model_sha256 == CHAT_MODEL_SHA256 and result.fingerprint.prompt_format == "chat"
    assert not result.fallback
    assert sha(result.text) == CHAT_GOLDEN[name], repr(result.text)


async def test_a_prompt_is_one_user_message() -> None:
    """On a chat model, prompt=X renders exactly as messages=[{"role": "user", "content": X}]."""
    client = st.default_client()
    a = await client.generate("Write a haiku about programming", max_new_tokens=24)
    b = await client.generate(messages=CONVERSATIONS["haiku"], max_new_tokens=24)
    assert (a.text, a.token_ids, a.usage) == (b.text, b.token_ids, b.usage)
    assert sha(a.text) == CHAT_GOLDEN["haiku"]


async def test_repeated_calls_identical_text_and_logprobs() -> None:
    a = await st.agenerate(PROMPT, max_new_tokens=16, return_logprobs=True)
    b = await st.agenerate(PROMPT, max_new_tokens=16, return_logprobs=True)
    assert isinstance(a, tuple) and isinstance(b, tuple)
    assert a == b
    assert sha(a[0][:]) == sha(b[0][:])
    assert a[1] is not None and len(a[1]["content"]) == 16


def test_fresh_process_gives_the_same_bytes() -> None:
    code = (
        "import hashlib, steadytext_async as st\n"
        "t = st.generate('The capital of France is', max_new_tokens=24)\n"
        "print(hashlib.sha256(t.encode()).hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True)
    assert out.stdout.strip() == sha(st.generate(PROMPT, max_new_tokens=24))


async def test_pool_shapes_and_thread_counts_give_identical_bytes() -> None:
    results = []
    for workers, threads in ((1, 1), (1, 2), (2, 2)):
        async with st.AsyncSteadyText(workers=workers, threads=threads) as client:
            r = await client.generate(PROMPT, max_new_tokens=24, return_logprobs=True)
            results.append(r)
            assert r.fingerprint.n_threads is not None and 1 <= r.fingerprint.n_threads <= threads
    assert {sha(r.text) for r in results} == {CHAT_GOLDEN["france"]}
    assert all(r.logprobs == results[0].logprobs for r in results)


async def test_eight_concurrent_requests_match_sequential() -> None:
    prompts = [f"Fact number {i}:" for i in range(4)] * 2
    client = st.default_client()
    sequential = {p: (await client.generate(p, max_new_tokens=12)).text for p in prompts[:4]}
    concurrent = await asyncio.gather(*(client.generate(p, max_new_tokens=12) for p in prompts))
    assert [r.text for r in concurrent] == [sequential[p] for p in prompts]


async def test_thread_share_changes_mid_generation_do_not_change_bytes() -> None:
    """A lone request starts with every thread; a second arrival shrinks its share mid-decode."""
    async with st.AsyncSteadyText(workers=1, threads=1) as ref_client:
        ref_a = await ref_client.generate("Once upon a time", max_new_tokens=160)
        ref_b = await ref_client.generate("The capital of France is", max_new_tokens=40)
    async with st.AsyncSteadyText(workers=2, threads=2, max_batch=1) as client:  # B must not join A's batch
        await client.preload()
        stream_a = client.stream("Once upon a time", max_new_tokens=160)
        first = await anext(stream_a)  # A is decoding alone, with both threads
        assert isinstance(first, st.Chunk)
        b = await client.generate("The capital of France is", max_new_tokens=40)  # A shrinks to 1 thread
        rest = [item async for item in stream_a]
        final = rest[-1]
        assert isinstance(final, st.GenerationResult)
        assert first.text + "".join(c.text for c in rest[:-1] if isinstance(c, st.Chunk)) == final.text
        assert final.text == ref_a.text and final.logprobs == ref_a.logprobs
        assert b.text == ref_b.text
        pool = client._local.pool
        assert pool.shrinks >= 1 and pool.peak_threads == 2


async def test_streamed_and_joined_equals_non_streamed() -> None:
    text = await st.agenerate(PROMPT, max_new_tokens=24)
    pieces = [p async for p in st.agenerate_iter(PROMPT, max_new_tokens=24)]
    assert all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == text
    items = [p async for p in st.agenerate_iter(PROMPT, max_new_tokens=24, include_logprobs=True)]
    assert "".join(i["token"] for i in items) == text
    _, lp = await st.agenerate(PROMPT, max_new_tokens=24, return_logprobs=True)
    assert lp is not None
    total = sum(t["logprob"] for t in lp["content"])
    assert abs(sum(i["logprob"] for i in items) - total) < 1e-9


async def test_sync_and_async_agree() -> None:
    a = await st.agenerate(PROMPT, max_new_tokens=24)
    s = st.generate(PROMPT, max_new_tokens=24)  # sync shim called from inside a running loop
    assert a == s
    assert "".join(st.generate_iter(PROMPT, max_new_tokens=24)) == a


async def test_temperature_sampling_is_seeded() -> None:
    a1 = await st.agenerate("Write a haiku", seed=1, max_new_tokens=24, temperature=0.7)
    a2 = await st.agenerate("Write a haiku", seed=1, max_new_tokens=24, temperature=0.7)
    b = await st.agenerate("Write a haiku", seed=2, max_new_tokens=24, temperature=0.7)
    greedy = await st.agenerate("Write a haiku", max_new_tokens=24)
    assert a1 == a2
    assert a1 != b
    assert a1 != greedy or b != greedy


async def test_seed_is_ignored_at_temperature_zero_as_documented() -> None:
    assert await st.agenerate(PROMPT, max_new_tokens=8, seed=123) == await st.agenerate(
        PROMPT, max_new_tokens=8, seed=456
    )
