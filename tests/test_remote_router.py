"""Router: provider:model resolution, the unsafe_mode gate (no traffic), API keys (missing, never shown)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import pickle
import traceback
from collections.abc import Iterator

import pytest
from _remote_servers import Action, ScriptedServer, Seen, chat_doc

from steadytext_async import AsyncSteadyText, GenerationRequest, MockProvider, Settings, UnsafeModeRequiredError
from steadytext_async._exceptions import (
    MissingAPIKeyError,
    RemoteAuthenticationError,
    RemoteServerError,
    UnknownProviderError,
)
from steadytext_async._router import Router
from steadytext_async.providers.local import LocalProvider
from steadytext_async.providers.openai_compat import OpenAICompatProvider
from steadytext_async.providers.presets import RemoteOptions, register_provider, unregister_provider

SENTINEL = "sk-SENTINEL-9f8e7d6c5b4a"
KEY_VAR = "STEADYTEXT_TEST_SENTINEL_KEY"


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture
def env(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> ScriptedServer:
    """Point every preset used here at the scripted server; clear real keys."""
    server.reset()
    for name in ("OPENAI", "VLLM", "OPENROUTER"):
        monkeypatch.setenv(f"STEADYTEXT_{name}_BASE_URL", server.url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test")
    return server


def router() -> Router:
    settings = Settings()
    return Router(settings, LocalProvider(settings))


def raw_request(model: str, unsafe_mode: bool) -> GenerationRequest:
    return GenerationRequest(prompt="hi", model=model, unsafe_mode=unsafe_mode, max_new_tokens=4)


async def test_routes_presets_and_ids_with_slashes(env: ScriptedServer) -> None:
    r = router()
    route = await r.route(raw_request("openrouter:meta-llama/llama-3-8b", True))
    provider, spec = route.provider, route.spec
    assert not route.local and route.here and not route.deterministic
    assert isinstance(provider, OpenAICompatProvider) and provider.name == "openrouter"
    assert (spec.provider, spec.name, spec.base_url, spec.prompt_format) == (
        "openrouter",
        "meta-llama/llama-3-8b",
        env.url,
        "chat",
    )
    again = (await r.route(raw_request("openrouter:other", True))).provider
    assert again is provider  # one provider (one connection pool) per name
    route_v = await r.route(raw_request("vllm:ollama:tag", True))
    assert route_v.spec.name == "ollama:tag" and route_v.provider is not provider
    await provider.aclose()


async def test_unknown_provider_lists_the_known_ones() -> None:
    with pytest.raises(UnknownProviderError, match=r"unknown provider 'nope'.*known providers: cerebras, deepseek"):
        await router().route(raw_request("nope:m", True))
    with pytest.raises(UnknownProviderError):
        await router().route(raw_request("Upper:m", True))


@pytest.mark.parametrize("model", ["vllm:m", "openai:gpt-4o-mini", "openrouter:meta-llama/llama-3-8b", "nokey-x:m"])
async def test_unsafe_gate_sends_nothing(env: ScriptedServer, model: str) -> None:
    register_provider("nokey-x", base_url=env.url, replace=True)
    try:
        with pytest.raises(UnsafeModeRequiredError, match="unsafe_mode=True"):
            await router().route(raw_request(model, False))
        async with AsyncSteadyText() as client:
            with pytest.raises(UnsafeModeRequiredError, match="unsafe_mode=True"):
                await client.generate("hi", model=model, max_new_tokens=4)
            with pytest.raises(UnsafeModeRequiredError, match="unsafe_mode=True"):
                async for _ in client.stream("hi", model=model, max_new_tokens=4):
                    pass
    finally:
        unregister_provider("nokey-x")
    await asyncio.sleep(0.05)
    assert env.connections == 0 and env.requests == []


async def test_missing_key_names_the_variable_and_sends_nothing(env: ScriptedServer) -> None:
    async with AsyncSteadyText() as client:
        with pytest.raises(MissingAPIKeyError, match="set the OPENAI_API_KEY environment variable") as info:
            await client.generate("hi", model="openai:gpt-4o-mini", unsafe_mode=True, max_new_tokens=4)
    assert info.value.env_var == "OPENAI_API_KEY" and info.value.attempts == 0
    assert env.connections == 0


async def test_key_sent_as_bearer_and_read_when_the_client_is_made(
    env: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: the key was read from the environment on every request; now once, with the client's settings.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-first")
    env.reset(*(Action("json", body=chat_doc(t)) for t in "abc"))
    async with AsyncSteadyText() as client:
        await client.generate("hi", model="openai:gpt-4o-mini", unsafe_mode=True, max_new_tokens=4)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-second")
        await client.generate("hi", model="openai:gpt-4o-mini", unsafe_mode=True, max_new_tokens=4)
    async with AsyncSteadyText() as client:  # a new client reads the rotated key
        result = await client.generate("hi", model="openai:gpt-4o-mini", unsafe_mode=True, max_new_tokens=4)
    assert [r.headers["authorization"] for r in env.requests] == ["Bearer sk-first"] * 2 + ["Bearer sk-second"]
    assert env.requests[0].body["max_completion_tokens"] == 4
    assert result.text == "c" and result.provider == "openai" and result.model == "gpt-4o-mini"


async def test_given_provider_wins(env: ScriptedServer) -> None:
    preset = register_provider("given-x", base_url=env.url, replace=True)
    try:
        mine = OpenAICompatProvider(preset)
        env.reset(Action("json", body=chat_doc("from given")))
        async with AsyncSteadyText(providers={"custom": mine}) as client:
            result = await client.generate("hi", model="custom:m", unsafe_mode=True, max_new_tokens=4)
        assert result.text == "from given" and result.provider == "given-x"
    finally:
        unregister_provider("given-x")


async def test_given_mock_provider_gate_follows_its_capabilities() -> None:
    """A deterministic given provider needs no unsafe_mode; a best-effort one is refused before it is called."""
    sure, loose = MockProvider(), MockProvider(deterministic=False)
    async with AsyncSteadyText(providers={"sure": sure, "loose": loose}) as client:
        result = await client.generate("hi", model="sure:m", max_new_tokens=3)
        assert result.provider == "mock" and result.model == "m" and result.usage.completion_tokens == 3
        with pytest.raises(UnsafeModeRequiredError, match="'loose:m' is remote"):
            await client.generate("hi", model="loose:m", max_new_tokens=3)
        with pytest.raises(UnsafeModeRequiredError):
            async for _ in client.stream("hi", model="loose:m", max_new_tokens=3):
                pass
        assert loose.requests == []
        loosened = await client.generate("hi", model="loose:m", max_new_tokens=3, unsafe_mode=True)
    assert [r.model for r in sure.requests + loose.requests] == ["sure:m", "loose:m"]
    assert loosened.text == result.text  # same default answer, both mocks
    # deterministic comes from the provider's capabilities (no magic info key)
    assert result.deterministic and result.fingerprint.top_k == 40
    assert not loosened.deterministic and loosened.fingerprint.top_k is None
    assert sure.closed == loose.closed == 1  # aclose() closes the providers it was given


def _echo_auth(seen: Seen) -> object:
    return {"error": {"message": f"invalid key {seen.headers.get('authorization')}"}}


async def test_api_key_never_shown(
    env: ScriptedServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(KEY_VAR, SENTINEL)
    register_provider(
        "sentinel-x",
        base_url=env.url,
        api_key_env=KEY_VAR,
        options=RemoteOptions(max_attempts=2, backoff=0.01),
        replace=True,
    )
    shown: list[str] = []
    caplog.set_level(logging.DEBUG)
    try:
        async with AsyncSteadyText() as client:
            env.reset(Action("json", status=500, body=_echo_auth), Action("json", body=chat_doc("fine")))
            result = await client.generate("hi", model="sentinel-x:m", unsafe_mode=True, max_new_tokens=4)
            async for item in client.stream("hi", model="sentinel-x:m", unsafe_mode=True, max_new_tokens=4):
                shown.append(repr(item))
            shown += [repr(result), result.model_dump_json(), result.fingerprint.to_json()]
            provider = client._router.providers["sentinel-x"]
            shown += [repr(provider), repr(vars(provider)), repr(client._router.__dict__)]
            with pytest.raises(TypeError):
                pickle.dumps(provider)
            for status, cls in ((401, RemoteAuthenticationError), (500, RemoteServerError)):
                env.reset(*[Action("json", status=status, body=_echo_auth)] * 2)
                with pytest.raises(cls) as info:
                    await client.generate("hi", model="sentinel-x:m", unsafe_mode=True, max_new_tokens=4)
                err = info.value
                shown += [str(err), repr(err), err.body, "".join(traceback.format_exception(err))]
                shown.append(repr(pickle.loads(pickle.dumps(err)).__dict__))
        assert env.requests[-1].headers["authorization"] == f"Bearer {SENTINEL}"  # it was sent...
        assert "***" in shown[-3]  # ...and the echo came back redacted
        from steadytext_async import cli

        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), contextlib.suppress(BaseException):
            cli.main(["-v", "generate", "hi", "--model", "sentinel-x:m", "--json", "--max-new-tokens", "4"])
        shown.append(out.getvalue())
    finally:
        unregister_provider("sentinel-x")
    captured = capfd.readouterr()
    shown += [captured.out, captured.err, caplog.text]
    shown += [r.getMessage() for r in caplog.records]
    assert any("retrying" in s for s in shown)  # the retry was logged
    assert not [s for s in shown if SENTINEL in s]
