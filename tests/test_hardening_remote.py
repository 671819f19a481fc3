"""Regression tests for the remote side of the hardening issue: replay consent, secrets, bounded responses.

Each test fails on the code before the fix (the comment on each says what happened then).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _remote_servers import Action, ScriptedServer, chat_doc

import steadytext_async as st
from steadytext_async import AsyncSteadyText, ConsentRequiredError, InvalidRequestError
from steadytext_async._exceptions import RemoteError, RemoteProtocolError
from steadytext_async._models import ModelSpec
from steadytext_async._replay import request_from_fingerprint
from steadytext_async._validate import build_request
from steadytext_async.providers.base import ProviderDone
from steadytext_async.providers.openai_compat import OpenAICompatProvider
from steadytext_async.providers.presets import PRESETS, RemoteOptions, register_provider, unregister_provider

KEY = "sk-SENTINEL-victim-0123456789"
SPEC = ModelSpec(provider="x", name="m")
CLI = [sys.executable, "-m", "steadytext_async"]


def recording(**changes: Any) -> dict[str, Any]:
    """A hand-made recording (what an attacker would mail you)."""
    fp: dict[str, Any] = {
        "package_version": st.__version__,
        "provider": "openai",
        "model": "gpt-attacker",
        "prompt": "attacker's prompt",
        "max_new_tokens": 100000,
        "eos_string": "[EOS]",
        "temperature": 0.0,
        "seed": 42,
        "top_k": None,
        "top_p": None,
        "min_p": None,
        "logprobs": False,
        "output_sha256": "0" * 64,
    }
    fp.update(changes)
    return {"text": "x", "fingerprint": fp}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("STEADYTEXT_OPENAI_BASE_URL", srv.url)
        monkeypatch.setenv("STEADYTEXT_UNSAFE_MODE", "1")  # a process-wide opt-in is not consent to replay
        yield srv


# -- 1. replay/verify consent ----------------------------------------------------------------------------------


async def test_remote_replay_needs_consent_and_sends_nothing(server: ScriptedServer) -> None:
    # Before: replay took unsafe_mode from the recording and POSTed the attacker's prompt with OPENAI_API_KEY.
    async with AsyncSteadyText() as client:
        with pytest.raises(ConsentRequiredError, match="allow_remote=True"):
            await client.replay(recording())
        assert (len(server.requests), server.connections) == (0, 0)
        report = await client.replay(recording(max_new_tokens=8), allow_remote=True)
    assert report.result.text == "Hello" and len(server.requests) == 1
    assert server.requests[0].body["messages"][0]["content"] == "attacker's prompt"
    assert isinstance(ConsentRequiredError("x"), st.UnsafeModeRequiredError)


def test_sync_replay_needs_consent(server: ScriptedServer) -> None:
    with st.SteadyText() as client, pytest.raises(ConsentRequiredError):
        client.replay(json.dumps(recording()))
    assert server.connections == 0


def test_cli_verify_remote_recording_needs_allow_remote(server: ScriptedServer, tmp_path: Path) -> None:
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(recording(max_new_tokens=8)))
    refused = subprocess.run([*CLI, "verify", str(path)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--allow-remote" in refused.stderr and "Traceback" not in refused.stderr
    assert (len(server.requests), server.connections) == (0, 0)
    allowed = subprocess.run([*CLI, "verify", str(path), "--allow-remote"], capture_output=True, text=True, timeout=120)
    assert allowed.returncode == 1 and "DIFFERENT" in allowed.stdout  # recorded sha is all zeros
    assert len(server.requests) == 1 and server.requests[0].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    "changes",
    [
        {"requested_model_repo": "attacker/evil-GGUF", "requested_model_filename": "evil.gguf"},
        {"requested_model": "gemma-3-1b-it"},  # a registry entry that is downloaded from the Hub
        {"requested_size": "large"},
        {"requested_model": "/tmp/planted.gguf"},
    ],
)
def test_recording_naming_another_model_needs_allow_download(changes: dict[str, Any], tmp_path: Path) -> None:
    # Before: a recording naming a Hub repo/file downloaded and loaded that model.
    if changes.get("requested_model", "").endswith(".gguf"):
        planted = tmp_path / "planted.gguf"
        planted.write_bytes(b"GGUF")
        changes = {"requested_model": str(planted)}
    local = {"provider": "local", "model": "m", "top_k": 40, "top_p": 0.95, "min_p": 0.05, "max_new_tokens": 8}
    fp = st.Fingerprint.model_validate(recording(**local, **changes)["fingerprint"])
    with pytest.raises(ConsentRequiredError, match="allow_download=True"):
        request_from_fingerprint(fp)
    request = request_from_fingerprint(fp, allow_download=True)
    assert request.prompt == "attacker's prompt"


def test_embedded_or_default_model_needs_no_consent() -> None:
    for changes in ({}, {"requested_model": "gemma-3-270m"}, {"requested_size": "mini"}):
        fp = st.Fingerprint.model_validate(
            recording(provider="local", model="gemma-3-270m", max_new_tokens=8, **changes)["fingerprint"]
        )
        assert request_from_fingerprint(fp).max_new_tokens == 8


# -- 4. secrets -------------------------------------------------------------------------------------------------


def mock(handler: Any, *, key: str | None = KEY, **changes: Any) -> OpenAICompatProvider:
    preset = dataclasses.replace(PRESETS["vllm"], **changes)
    return OpenAICompatProvider(preset, api_key=key, transport=httpx.MockTransport(handler))


async def drain(p: OpenAICompatProvider, sse: bool | None = None, **kw: Any) -> list[Any]:
    try:
        return [e async for e in p.stream(SPEC, build_request("hi", **kw), sse=sse)]
    finally:
        await p.aclose()


def echo_key(request: httpx.Request) -> str:
    return request.headers["authorization"].removeprefix("Bearer ")


@pytest.mark.parametrize(
    "answer",
    [
        lambda k: httpx.Response(200, json={"error": {"message": f"invalid key {k}"}}),  # error object in a 200
        lambda k: httpx.Response(200, json={"error": f"invalid key {json.dumps(k)}"}),
        lambda k: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=f"data: {{oops {k}\n\n"),
        lambda k: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=f'data: [1, "{k}"]\n\n'),
        lambda k: httpx.Response(200, json={"choices": [{"message": {"content": "ok"}, "finish_reason": k}]}),
    ],
)
async def test_key_echoed_in_any_error_is_redacted(answer: Any) -> None:
    # Before: the key came back in the exception text of an error inside a 200, and of malformed events.
    with pytest.raises(RemoteError) as info:
        await drain(mock(lambda r: answer(echo_key(r))))
    assert "SENTINEL" not in str(info.value) and "***" in str(info.value)


@pytest.mark.parametrize(
    "key", ["sk-abc\ndef", "sk-abc\rdef", "sk-\x00abc", "sk-abc\tdef", "sk-abc\x85def", "sk-abc\udcffdef"]
)
def test_keys_with_control_characters_are_refused_up_front(key: str) -> None:
    # Before: a key with a newline was accepted; it came back escaped ("\\n") where redaction missed it.
    with pytest.raises(InvalidRequestError, match=r"control characters|not valid text") as info:
        mock(lambda r: httpx.Response(500), key=key)
    assert "abc" not in str(info.value)


async def test_key_with_control_characters_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with ScriptedServer() as srv:
        monkeypatch.setenv("HARDEN_KEY", "sk-one\nsk-two")
        register_provider("hardkey", base_url=srv.url, api_key_env="HARDEN_KEY", replace=True)
        try:
            async with AsyncSteadyText() as client:
                with pytest.raises(InvalidRequestError, match="control characters"):
                    await client.generate("hi", model="hardkey:m", unsafe_mode=True)
        finally:
            unregister_provider("hardkey")
        assert srv.connections == 0


def test_base_url_with_credentials_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: user:password@ went into fingerprint.base_url, --json output, the cache file, errors and DEBUG logs.
    with pytest.raises(InvalidRequestError, match="credentials") as info:
        register_provider("credurl", base_url="https://alice:hunter2secret@llm.example/v1")
    assert "hunter2secret" not in str(info.value) and "***@llm.example" in str(info.value)
    with pytest.raises(InvalidRequestError, match="credentials"):
        dataclasses.replace(PRESETS["vllm"], base_url="http://bob:pw@127.0.0.1:1/v1")
    monkeypatch.setenv("STEADYTEXT_VLLM_BASE_URL", "http://bob:hunter2secret@127.0.0.1:1/v1")
    with pytest.raises(InvalidRequestError, match="STEADYTEXT_VLLM_BASE_URL") as info, st.SteadyText() as client:
        client.generate("hi", model="vllm:m", unsafe_mode=True)
    assert "hunter2secret" not in str(info.value)


async def test_remote_cache_entries_are_scoped_by_key_and_headers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Before: key B got key A's cached answer; preset headers were not part of the key either.
    with ScriptedServer() as srv:
        srv.default = lambda seen: Action("json", body=chat_doc(f"for {seen.headers['authorization'][-1]}"))
        register_provider("scoped", base_url=srv.url, api_key_env="SCOPED_KEY", replace=True)
        try:
            answers = []
            for key in ("sk-key-A", "sk-key-B", "sk-key-A"):
                monkeypatch.setenv("SCOPED_KEY", key)
                async with AsyncSteadyText(cache_disabled=False, cache_dir=tmp_path) as client:
                    answers.append(await client.generate("hi", model="scoped:m", unsafe_mode=True, max_new_tokens=8))
            assert [(r.text, r.cached) for r in answers] == [("for A", False), ("for B", False), ("for A", True)]
            assert len({r.fingerprint.inputs_sha256 for r in answers}) == 1  # the inputs are the same
            register_provider(
                "scoped", base_url=srv.url, api_key_env="SCOPED_KEY", headers={"OpenAI-Organization": "org-2"},
                replace=True,
            )  # fmt: skip
            async with AsyncSteadyText(cache_disabled=False, cache_dir=tmp_path) as client:
                other = await client.generate("hi", model="scoped:m", unsafe_mode=True, max_new_tokens=8)
            assert not other.cached and len(srv.requests) == 3
        finally:
            unregister_provider("scoped")
        stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())  # noqa: ASYNC240
        assert b"sk-key-A" not in stored and b"sk-key-B" not in stored


# -- 5. bounded responses ---------------------------------------------------------------------------------------


class CountingStream(httpx.AsyncByteStream):
    """An endless body that counts what the client pulled."""

    def __init__(self, chunk: bytes, prefix: bytes = b"") -> None:
        self.chunk, self.prefix, self.pulled = chunk, prefix, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.prefix
        while True:
            self.pulled += len(self.chunk)
            yield self.chunk


@pytest.mark.parametrize(
    ("content_type", "prefix"),
    [("application/json", b'{"choices": [{"message": {"content": "'), ("text/event-stream", b"data: {")],
)
async def test_huge_bodies_are_capped_while_streaming(content_type: str, prefix: bytes) -> None:
    # Before: a 50 MB body was buffered whole (+158 MB RSS), and an endless one never ended.
    body = CountingStream(b"a" * 65536, prefix)
    options = RemoteOptions(max_response_bytes=1 << 20)
    p = mock(lambda r: httpx.Response(200, headers={"content-type": content_type}, stream=body), options=options)
    with pytest.raises(RemoteProtocolError, match="max_response_bytes"):
        await drain(p, max_new_tokens=100000)
    assert (1 << 20) <= body.pulled <= (1 << 20) + 65536


@pytest.mark.parametrize("sse", [True, False])
async def test_output_longer_than_max_new_tokens_allows_is_a_protocol_error(sse: bool) -> None:
    # Before: max_new_tokens=8 returned 500,000 characters.
    text = "x" * 500_000
    if sse:
        chunks = "".join(f"data: {json.dumps({'choices': [{'delta': {'content': text[i:i + 10000]}}]})}\n\n"
                         for i in range(0, len(text), 10000))  # fmt: skip
        answer = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=chunks + "data: [DONE]\n\n")
    else:
        answer = httpx.Response(200, json=chat_doc(text))
    with pytest.raises(RemoteProtocolError, match="max_new_tokens=8"):
        await drain(mock(lambda r: answer), max_new_tokens=8, sse=sse)
    ok = await drain(mock(lambda r: httpx.Response(200, json=chat_doc("y" * 8 * 256))), max_new_tokens=8, sse=False)
    assert isinstance(ok[-1], ProviderDone)


@pytest.mark.parametrize("sse", [True, False])
async def test_deeply_nested_json_is_a_protocol_error(sse: bool) -> None:
    # Before: RecursionError escaped from json.loads.
    nested = "[" * 200_000 + "]" * 200_000
    if sse:
        answer = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=f"data: {nested}\n\n")
    else:
        answer = httpx.Response(200, headers={"content-type": "application/json"}, content=nested.encode())
    with pytest.raises(RemoteProtocolError, match="nested too deeply"):
        await drain(mock(lambda r: answer), sse=sse)


def test_remote_options_limits_are_configurable() -> None:
    assert RemoteOptions().max_response_bytes == 16 << 20 and RemoteOptions().max_bytes_per_token == 256
    with pytest.raises(InvalidRequestError):
        RemoteOptions(max_response_bytes=0)


def test_no_stray_environment() -> None:
    assert "HARDEN_KEY" not in os.environ
