"""Fallback when no model can be loaded: the hub is offline here, so size='small' cannot be resolved."""

import logging

import pytest

import steadytext_async as st
from steadytext_async._fallback import fallback_words

pytestmark = pytest.mark.model  # drives worker processes (see conftest: one asyncio loop)


def test_fallback_words_are_deterministic_and_seed_dependent() -> None:
    a = "".join(fallback_words("test prompt", 42, 20))
    assert a == "".join(fallback_words("test prompt", 42, 20))
    assert a != "".join(fallback_words("test prompt", 123, 20))
    assert a != "".join(fallback_words("other prompt", 42, 20))
    assert len(a.split()) == 20
    assert "".join(fallback_words("test prompt", 42, 21)) != a  # depends on max_new_tokens too


async def test_offline_hub_model_falls_back_with_a_visible_mark(caplog: pytest.LogCaptureFixture) -> None:
    async with st.AsyncSteadyText(workers=1, threads=1) as client:
        with caplog.at_level(logging.WARNING, logger="steadytext_async"):
            r1 = await client.generate("test prompt", size="small", seed=42, max_new_tokens=12)
            r2 = await client.generate("test prompt", size="small", seed=42, max_new_tokens=12)
            r3 = await client.generate("test prompt", size="small", seed=123, max_new_tokens=12)
        assert r1.fallback and r1.provider == "fallback" and r1.fingerprint.fallback
        assert r1.text == r2.text != r3.text
        assert len(r1.text.split()) == 12
        assert r1.text == "".join(fallback_words("test prompt", 42, 12))
        assert client.worker_pids() == []  # nothing was spawned
        warned = [r for r in caplog.records if "fallback" in r.getMessage()]
        assert len(warned) == 1  # warned once, not per call


async def test_fallback_through_module_api_is_marked() -> None:
    text = await st.agenerate("hello", size="small", max_new_tokens=5)
    assert isinstance(text, str) and isinstance(text, st.GeneratedText)
    assert text.fallback is True
    pieces = [p async for p in st.agenerate_iter("hello", size="small", max_new_tokens=5)]
    assert "".join(pieces) == text


async def test_strict_mode_raises_model_unavailable() -> None:
    with pytest.raises(st.ModelUnavailableError, match="gemma-3-1b-it"):
        await st.agenerate("hello", size="small", strict=True)
    async with st.AsyncSteadyText(strict=True) as client:
        with pytest.raises(st.ModelUnavailableError):
            await client.generate("hello", size="large")


def test_fallback_honours_stop_string() -> None:
    text = st.generate("stop test", size="small", max_new_tokens=30)
    assert isinstance(text, str)
    word = text.split()[3]
    cut = st.generate("stop test", size="small", max_new_tokens=30, eos_string=" " + word)
    assert isinstance(cut, str)
    assert text.startswith(cut) and len(cut) < len(text)
    assert cut.result.finish_reason == "stop_string"
