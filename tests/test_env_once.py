"""A client reads the environment once, when its settings are made; no request reads it (model-free).

Before: ``STEADYTEXT_UNSAFE_MODE`` was read by every ``build_request``, API keys and ``STEADYTEXT_<NAME>_BASE_URL``
on every remote request, the serve token whenever the daemon provider made a connection, and ``HF_HUB_OFFLINE``
when a download failed (while huggingface_hub itself had read it once, at import).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _remote_servers import Action, ScriptedServer, chat_doc

import steadytext_async as st
from steadytext_async import _registry
from steadytext_async._exceptions import ModelUnavailableError, UnsafeModeRequiredError
from steadytext_async.providers.daemon import DaemonProvider
from steadytext_async.providers.local import LocalProvider


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


async def test_unsafe_mode_is_the_clients_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    best_effort = {"mock": st.MockProvider(deterministic=False)}
    monkeypatch.delenv("STEADYTEXT_UNSAFE_MODE", raising=False)
    async with st.AsyncSteadyText(providers=best_effort) as strict_client:
        monkeypatch.setenv("STEADYTEXT_UNSAFE_MODE", "1")  # too late for this client
        with pytest.raises(UnsafeModeRequiredError):
            await strict_client.generate("hi", model="mock:m", max_new_tokens=2)
        async with st.AsyncSteadyText(providers=best_effort) as opted_in:
            monkeypatch.delenv("STEADYTEXT_UNSAFE_MODE")
            result = await opted_in.generate("hi", model="mock:m", max_new_tokens=2)
    assert result.provider == "mock"
    async with st.AsyncSteadyText(providers=best_effort, unsafe_mode=True) as keyword:  # a keyword override too
        assert (await keyword.generate("hi", model="mock:m", max_new_tokens=2)).provider == "mock"


async def test_base_url_is_read_when_the_client_is_made(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEADYTEXT_VLLM_BASE_URL", server.url)
    server.reset(Action("json", body=chat_doc("a")), Action("json", body=chat_doc("b")))
    async with st.AsyncSteadyText(cache_disabled=True) as client:
        first = await client.generate("hi", model="vllm:m", unsafe_mode=True, max_new_tokens=4)
        monkeypatch.setenv("STEADYTEXT_VLLM_BASE_URL", "http://127.0.0.1:1/v1")  # nothing listens there
        second = await client.generate("hi", model="vllm:m", unsafe_mode=True, max_new_tokens=4)
    assert (first.text, second.text, len(server.requests)) == ("a", "b", 2)


async def test_serve_token_is_read_with_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEADYTEXT_SERVE_TOKEN", "tok-first")
    settings = st.Settings.from_env(daemon_url="http://127.0.0.1:9")
    monkeypatch.setenv("STEADYTEXT_SERVE_TOKEN", "tok-second")
    provider = DaemonProvider(settings, LocalProvider(settings))
    try:
        client: httpx.AsyncClient = provider._client()
        assert client.headers["authorization"] == "Bearer tok-first"
    finally:
        await provider.aclose()


@pytest.mark.parametrize("offline", [False, True])
def test_hub_offline_hint_follows_huggingface_hub(
    offline: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The hint says what huggingface_hub decided (it reads HF_HUB_OFFLINE once, at import), not the variable now."""
    import huggingface_hub
    from huggingface_hub import constants

    def refuse(**kwargs: object) -> str:
        raise OSError("no network here")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0" if offline else "1")  # the opposite: not what decides
    with pytest.raises(ModelUnavailableError) as info:
        _registry._hub_download("someone/repo", "x.gguf")
    assert ("HF_HUB_OFFLINE is set" in str(info.value)) is offline
