"""Decoding semantics: stop strings, EOS, max_new_tokens, prompts of every shape, logprobs shape."""

import math

import pydantic
import pytest

import steadytext_async as st
from steadytext_async._worker.parent.pool import Done, Pool
from steadytext_async._worker.protocol import GenParams, PieceFrame

pytestmark = pytest.mark.model  # drives worker processes (see conftest: one asyncio loop)

PROMPT = "The capital of France is"


async def test_max_new_tokens_is_honoured_exactly() -> None:
    client = st.default_client()
    for n in (1, 7, 33):
        r = await client.generate(PROMPT, max_new_tokens=n)
        assert r.usage.completion_tokens == n == len(r.token_ids)
        assert r.finish_reason == "length"


async def test_stop_string_cuts_output_and_is_excluded() -> None:
    client = st.default_client()
    full = await client.generate(PROMPT, max_new_tokens=24)
    stop = "capital"
    assert stop in full.text
    r = await client.generate(PROMPT, max_new_tokens=24, eos_string=stop)
    assert r.finish_reason == "stop_string"
    assert r.text == full.text[: full.text.index(stop)]
    assert stop not in r.text
    pieces = [p async for p in st.agenerate_iter(PROMPT, max_new_tokens=24, eos_string=stop)]
    assert "".join(pieces) == r.text


async def test_eos_token_ends_generation(model_spec: st.ModelSpec) -> None:
    """The chat model ends its turn with its end token (ChatML ``<|im_end|>``, id 2): finish_reason 'eos', and the
    end token itself is never part of the output."""
    pool = Pool(max_workers=1, threads=1, n_ctx=512, n_batch=512)
    try:
        assert model_spec.path is not None
        params = GenParams(prompt="", messages=({"role": "user", "content": "Hi"},), max_new_tokens=32)
        events = [e async for e in pool.stream(model_spec.path, params)]
        done = events[-1]
        assert isinstance(done, Done)
        assert done.finish_reason == "eos"
        pieces = [e for e in events if isinstance(e, PieceFrame)]
        ids = [t for p in pieces for t in p.token_ids]
        assert done.usage.completion_tokens == len(ids) == 16
        assert not {0, 2} & set(ids)  # <|endoftext|> and <|im_end|> never appear in the output
        assert "".join(p.text for p in pieces) == "Hello! How can I help you today? We can chat about something fun!"
    finally:
        await pool.aclose()


async def test_empty_multiline_and_unicode_prompts() -> None:
    client = st.default_client()
    for prompt in (
        "",
        "Write a function that:\n1. Takes a list\n2. Sorts it\n3. Returns the result",
        "Write about 🤖 and 人工智能",
        "Ünïcödé façade — “quotes” ✓",
    ):
        r = await client.generate(prompt, max_new_tokens=12)
        assert r.text and not r.fallback
        assert r.usage.prompt_tokens >= 1


async def test_long_prompt_is_truncated_from_the_left() -> None:
    async with st.AsyncSteadyText(workers=1, threads=2, n_ctx=256) as client:
        long_prompt = "Explain " * 1000 + "machine learning"
        r = await client.generate(long_prompt, max_new_tokens=16)
        assert r.usage.prompt_tokens == 256 - 16
        assert r.usage.prompt_tokens_truncated > 0
        assert r.usage.completion_tokens == 16
        # The kept tail alone decides the output: a different (dropped) head gives the same text.
        other_head = await client.generate("Something else entirely. " * 50 + long_prompt, max_new_tokens=16)
        assert other_head.text == r.text and other_head.token_ids == r.token_ids
        assert other_head.usage.prompt_tokens_truncated > r.usage.prompt_tokens_truncated
        with pytest.raises(st.InvalidRequestError, match="n_ctx"):
            await client.generate("x", max_new_tokens=256)


async def test_streamed_pieces_are_whole_characters() -> None:
    pieces = [p async for p in st.agenerate_iter("Translate to Japanese: cat = 猫, dog =", max_new_tokens=24)]
    for piece in pieces:
        assert isinstance(piece, str)
        piece.encode("utf-8")  # would raise on lone surrogates
    assert "\ufffd" not in "".join(pieces)


async def test_logprobs_shape_is_openai_like() -> None:
    text, lp = await st.agenerate(PROMPT, max_new_tokens=8, return_logprobs=True)
    assert lp is not None and set(lp) == {"content"}
    content = lp["content"]
    assert len(content) == 8
    assert "".join(bytes(c["bytes"]).decode("utf-8", "replace") for c in content) == text
    for entry in content:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert entry["logprob"] <= 0 and math.isfinite(entry["logprob"])
        tops = entry["top_logprobs"]
        assert len(tops) == 5
        assert [t["logprob"] for t in tops] == sorted((t["logprob"] for t in tops), reverse=True)
        assert tops[0]["token"] == entry["token"]  # greedy picks the most likely token
        assert tops[0]["logprob"] == entry["logprob"]


async def test_result_object_fields() -> None:
    r = await st.default_client().generate(PROMPT, max_new_tokens=8)
    assert r.provider == "local" and r.model == "smollm2-135m-instruct"
    assert r.cached is False and r.fallback is False
    assert r.timings.total >= r.timings.decode > 0
    # the template's default system line (30 tokens) and the user turn around the 5 prompt tokens
    assert r.usage.prompt_tokens == 35 and len(r.token_ids) == 8
    fp = r.fingerprint
    assert fp.llama_cpp_python_version == "0.3.36"
    assert fp.n_ctx == 4096 and fp.n_batch == 512
    assert "OPENMP" not in (fp.llama_cpp_system_info or "")
    assert fp.to_json() == r.fingerprint.to_json()
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        r.text = "changed"
    assert r.text != "changed"
