"""Hardening round 2 (issue 25), the daemon client: what listens at ``STEADYTEXT_DAEMON_URL`` is checked before it
gets prompts or the token, its output is cached only when it is authenticated (M8), malformed replies are typed
(L1), its URL's password is never logged and a bad URL is refused (L2, L3).

A fake daemon (a small asyncio HTTP server on a unix socket) answers with chosen bytes; the in-process side is a
stub, so no model runs."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from steadytext_async import AsyncSteadyText, MockProvider
from steadytext_async._config import Settings
from steadytext_async._exceptions import InvalidRequestError
from steadytext_async._models import GenerationRequest, ModelSpec
from steadytext_async._validate import build_request
from steadytext_async.providers.base import ProviderChunk, ProviderDone
from steadytext_async.providers.daemon import DaemonProvider

SPEC = ModelSpec(name="m", path="/m.gguf", sha256="a" * 64)


class InProcess:
    """Stands for the in-process LocalProvider: answers "local" and records that it ran."""

    def __init__(self) -> None:
        self.runs = 0

    def check(self, request: GenerationRequest) -> None:
        return None

    async def stream(
        self, spec: ModelSpec, request: GenerationRequest, *, sse: bool | None = None
    ) -> AsyncIterator[ProviderChunk | ProviderDone]:
        self.runs += 1
        yield ProviderChunk("local", [7], None)
        yield ProviderDone(finish_reason="eos", completion_tokens=1)

    async def preload(self, spec: ModelSpec) -> None:
        return None


class FakeDaemon:
    """Answers every HTTP request on a unix socket with ``body`` (JSON lines); records the requests' heads."""

    def __init__(self, path: str, body: bytes) -> None:
        self.path = path
        self.body = body
        self.heads: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> FakeDaemon:
        self.server = await asyncio.start_unix_server(self._answer, path=self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            0,
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n"
            + f"content-length: {len(self.body)}\r\nconnection: close\r\n\r\n".encode()
            + self.body
        )
        await writer.drain()
        writer.close()


async def _run(provider: DaemonProvider) -> str:
    request = build_request("Hi", max_new_tokens=4)
    text = ""
    async for event in provider.stream(SPEC, request):
        if isinstance(event, ProviderChunk):
            text += event.text
    return text


GOOD = b'{"chunk":["daemon",[1],null]}\n{"done":{"finish_reason":"eos","completion_tokens":1}}\n'


async def test_a_unix_socket_of_another_user_is_not_used(tmp_path: Path) -> None:
    path = str(tmp_path / "d.sock")
    local = InProcess()
    async with FakeDaemon(path, GOOD) as fake:
        os.chown(path, 65534, 65534)  # as if "nobody" had put a socket there
        provider = DaemonProvider(Settings(daemon_url=f"unix://{path}"), local)  # type: ignore[arg-type]
        try:
            assert await _run(provider) == "local"
        finally:
            await provider.aclose()
    assert fake.heads == []  # no prompt was sent
    assert local.runs == 1


async def test_this_users_socket_is_used_and_authenticated(tmp_path: Path) -> None:
    path = str(tmp_path / "d.sock")
    local = InProcess()
    async with FakeDaemon(path, GOOD) as fake:
        provider = DaemonProvider(Settings(daemon_url=f"unix://{path}"), local)  # type: ignore[arg-type]
        try:
            assert await _run(provider) == "daemon"
        finally:
            await provider.aclose()
    assert len(fake.heads) == 1 and local.runs == 0
    assert provider.results_cacheable


@pytest.mark.parametrize(
    ("url", "cacheable"),
    [("http://127.0.0.1:8000", False), ("http://localhost:8000", False), ("https://engine.example:443", True)],
)
def test_only_authenticated_daemons_output_is_cacheable(url: str, cacheable: bool) -> None:
    provider = DaemonProvider(Settings(daemon_url=url), InProcess())  # type: ignore[arg-type]
    assert provider.results_cacheable is cacheable


async def test_unauthenticated_provider_output_is_not_written_to_the_cache(tmp_path: Path) -> None:
    class Unauthenticated(MockProvider):
        results_cacheable = False

    mock = Unauthenticated()
    async with AsyncSteadyText(Settings(cache_dir=tmp_path), providers={"mock": mock}) as client:
        first = await client.generate("Hi", model="mock:m", max_new_tokens=4)
        second = await client.generate("Hi", model="mock:m", max_new_tokens=4)
    assert (first.cached, second.cached) == (False, False)
    assert len(mock.requests) == 2  # generated again: nothing of it was stored


async def test_token_is_not_sent_over_plain_http_to_another_host(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("STEADYTEXT_SERVE_TOKEN", "tok-SECRET")
    local = InProcess()
    provider = DaemonProvider(Settings(daemon_url="http://192.0.2.10:8000"), local)  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.WARNING, logger="steadytext_async"):
            assert await _run(provider) == "local"
            await provider.preload(SPEC)
    finally:
        await provider.aclose()
    assert len(provider._clients) == 0  # no HTTP client was ever made
    assert any("plain http" in r.getMessage() for r in caplog.records)
    opted_in = DaemonProvider(Settings(daemon_url="http://192.0.2.10:8000", daemon_insecure=True), local)  # type: ignore[arg-type]
    assert opted_in._refusal is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json\n",
        b"[1, 2]\n",
        b'{"chunk": 5}\n',
        b'{"chunk": ["a", "b", null]}\n',
        b'{"chunk": ["a", [1], [{"bad": 1}]]}\n',
        b'{"done": {"bogus": 1}}\n',
        b'{"done": {"finish_reason": "exploded"}}\n',
        b'{"error": "text"}\n',
        b'{"something": 1}\n',
    ],
)
async def test_malformed_replies_fall_back_in_process(tmp_path: Path, body: bytes) -> None:
    path = str(tmp_path / "d.sock")
    local = InProcess()
    async with FakeDaemon(path, body):
        provider = DaemonProvider(Settings(daemon_url=f"unix://{path}"), local)  # type: ignore[arg-type]
        try:
            assert await _run(provider) == "local"  # not TypeError / JSONDecodeError / ValidationError
        finally:
            await provider.aclose()
    assert local.runs == 1


async def test_daemon_url_password_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    url = "http://user:pa55word@127.0.0.1:1"  # nothing listens on port 1
    provider = DaemonProvider(Settings(daemon_url=url), InProcess())  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.DEBUG, logger="steadytext_async"):
            assert await _run(provider) == "local"
    finally:
        await provider.aclose()
    messages = [r.getMessage() for r in caplog.records]
    assert messages and not any("pa55word" in m for m in messages)


def test_daemon_url_scheme_is_checked() -> None:
    with pytest.raises(InvalidRequestError, match="daemon_url"):
        Settings(daemon_url="ftp://user:pa55word@host/x")
    with pytest.raises(InvalidRequestError) as info:
        Settings(daemon_url="ftp://user:pa55word@host/x")
    assert "pa55word" not in str(info.value)


def test_a_mistyped_cache_url_is_redacted() -> None:
    with pytest.raises(InvalidRequestError) as info:
        Settings(cache_url="redis//user:pa55word@host:6379/0")
    assert "pa55word" not in str(info.value)
