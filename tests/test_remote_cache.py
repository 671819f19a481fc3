"""Remote results go through the shared cache and carry best-effort metadata; keys never reach the cache file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _remote_servers import Action, ScriptedServer, chat_doc

from steadytext_async import AsyncSteadyText
from steadytext_async.providers.presets import register_provider, unregister_provider

SENTINEL = "sk-SENTINEL-cache-1a2b3c"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedServer]:
    monkeypatch.setenv("STEADYTEXT_TEST_CACHE_KEY", SENTINEL)
    with ScriptedServer() as srv:
        register_provider("cachetest", base_url=srv.url, api_key_env="STEADYTEXT_TEST_CACHE_KEY", replace=True)
        try:
            yield srv
        finally:
            unregister_provider("cachetest")


async def test_remote_results_are_cached_keyed_and_marked(server: ScriptedServer, tmp_path: Path) -> None:
    server.reset(Action("json", body=chat_doc("Hello there")), Action("json", body=chat_doc("Other")))
    async with AsyncSteadyText(cache_disabled=False, cache_dir=tmp_path) as client:
        first = await client.generate("hi", model="cachetest:m1", unsafe_mode=True, max_new_tokens=8)
        again = await client.generate("hi", model="cachetest:m1", unsafe_mode=True, max_new_tokens=8)
        other = await client.generate("hi", model="cachetest:m2", unsafe_mode=True, max_new_tokens=8)
    assert first.text == again.text == "Hello there" and not first.cached and again.cached
    assert other.text == "Other" and not other.cached  # the model id is part of the key
    assert len(server.requests) == 2
    fp = first.fingerprint
    assert first.deterministic is False and first.provider == "cachetest"
    assert (fp.provider, fp.model, fp.base_url) == ("cachetest", "m1", server.url)
    assert fp.top_k is None and fp.inputs_sha256 is not None and fp.n_ctx is None
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())  # noqa: ASYNC240 - test check
    assert b"Hello there" in stored or len(stored) > 0
    assert SENTINEL.encode() not in stored
