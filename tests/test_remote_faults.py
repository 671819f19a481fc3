"""Fault injection over real loopback sockets: 429 + Retry-After, 500, connection reset, stalled and malformed
streams, cancellation. Every call is bounded by the provider's deadline and a test-side guard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from _remote_servers import Action, ScriptedServer, chat_doc, chat_events

from steadytext_async import AsyncSteadyText, Chunk, GenerationResult
from steadytext_async._exceptions import (
    RemoteConnectionError,
    RemoteProtocolError,
    RemoteRateLimitError,
    RemoteServerError,
    RemoteTimeoutError,
)
from steadytext_async._models import ModelSpec
from steadytext_async._validate import build_request
from steadytext_async.providers.openai_compat import OpenAICompatProvider
from steadytext_async.providers.presets import RemoteOptions, get_preset, register_provider, unregister_provider

GUARD = 30.0  # a test-side bound far above every deadline below: reaching it means a hang
OPTIONS = RemoteOptions(timeout=0.5, connect_timeout=2.0, deadline=8.0, max_attempts=3, backoff=0.01, max_backoff=0.05)
OK = Action("sse", events=chat_events(["Hel", "lo"]))


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        register_provider("faulty", base_url=srv.url, options=OPTIONS, replace=True)
        register_provider(
            "slowdeadline",
            base_url=srv.url,
            options=RemoteOptions(timeout=60.0, deadline=1.0, max_attempts=2, backoff=0.01),
            replace=True,
        )
        yield srv
        unregister_provider("faulty")
        unregister_provider("slowdeadline")


@pytest.fixture
async def client(server: ScriptedServer) -> AsyncIterator[AsyncSteadyText]:
    async with AsyncSteadyText() as c:
        yield c


async def generate(client: AsyncSteadyText, model: str = "faulty:m") -> GenerationResult:
    return await asyncio.wait_for(client.generate("hi", model=model, unsafe_mode=True, max_new_tokens=8), GUARD)


async def test_baseline(server: ScriptedServer, client: AsyncSteadyText) -> None:
    server.reset(OK)
    result = await generate(client)
    assert (result.text, result.finish_reason, result.provider, result.model) == ("Hello", "eos", "faulty", "m")
    assert len(server.requests) == 1 and server.requests[0].path == "/v1/chat/completions"


async def test_429_retry_after_then_success(server: ScriptedServer, client: AsyncSteadyText) -> None:
    limited = Action("json", status=429, body={"error": {"message": "slow down"}}, headers={"retry-after": "0.05"})
    server.reset(limited, limited, OK)
    result = await generate(client)
    assert result.text == "Hello" and len(server.requests) == 3


async def test_429_until_attempts_run_out(server: ScriptedServer, client: AsyncSteadyText) -> None:
    limited = Action("json", status=429, body={"error": {"message": "slow down"}}, headers={"retry-after": "0.05"})
    server.reset(limited, limited, limited, OK)
    with pytest.raises(RemoteRateLimitError) as info:
        await generate(client)
    assert info.value.attempts == 3 and info.value.status_code == 429 and len(server.requests) == 3
    assert "gave up after 3 attempts" in str(info.value) and "slow down" in str(info.value)


async def test_500_retried_then_typed_error(server: ScriptedServer, client: AsyncSteadyText) -> None:
    broken = Action("json", status=500, body={"error": {"message": "kaput"}}, headers={"x-request-id": "rq-5"})
    server.reset(broken, broken, broken)
    with pytest.raises(RemoteServerError, match=r"HTTP 500: kaput \(gave up after 3 attempts\)") as info:
        await generate(client)
    assert (info.value.request_id, len(server.requests)) == ("rq-5", 3)


async def test_connection_reset_is_retried(server: ScriptedServer, client: AsyncSteadyText) -> None:
    server.reset(Action("reset"), OK)
    assert (await generate(client)).text == "Hello"
    server.reset(Action("reset"), Action("reset"), Action("reset"))
    with pytest.raises(RemoteConnectionError, match="gave up after 3 attempts") as info:
        await generate(client)
    assert info.value.attempts == 3


async def test_stalled_stream_times_out(server: ScriptedServer, client: AsyncSteadyText) -> None:
    server.reset(Action("stall", events=chat_events(["par", "tial"], finish=None, done=False)))
    seen: list[str] = []
    with pytest.raises(RemoteTimeoutError, match="stalled"):
        async with asyncio.timeout(GUARD):
            async for item in client.stream("hi", model="faulty:m", unsafe_mode=True):
                assert isinstance(item, Chunk)
                seen.append(item.text)
    assert seen == ["par", "tial"] and len(server.requests) == 1


async def test_overall_deadline_bounds_a_stall(server: ScriptedServer, client: AsyncSteadyText) -> None:
    server.reset(Action("stall", events=chat_events(["x"], finish=None, done=False)))
    with pytest.raises(RemoteTimeoutError, match="deadline of 1s"):
        await generate(client, "slowdeadline:m")


async def test_malformed_sse_is_a_protocol_error(server: ScriptedServer, client: AsyncSteadyText) -> None:
    server.reset(Action("sse", events=[chat_events(["ok"])[1], "{this is not json"]))
    with pytest.raises(RemoteProtocolError, match="malformed stream event"):
        await generate(client)
    assert len(server.requests) == 1  # output had started: never retried


async def test_garbage_response_is_a_protocol_error(server: ScriptedServer, client: AsyncSteadyText) -> None:
    server.reset(Action("json", body=b"<html>gateway</html>"))
    with pytest.raises(RemoteProtocolError, match="malformed"):
        await generate(client)


async def test_not_http_at_all(server: ScriptedServer, client: AsyncSteadyText) -> None:
    server.reset(*[Action("raw", raw=b"SSH-2.0-OpenSSH\r\n")] * 3)
    with pytest.raises(RemoteConnectionError, match="gave up after 3 attempts"):
        await generate(client)


async def test_stream_without_finish_reason(server: ScriptedServer, client: AsyncSteadyText) -> None:
    server.reset(Action("sse", events=chat_events(["cut"], finish=None, done=False)))  # cut off: no [DONE]
    with pytest.raises(RemoteProtocolError, match="without a finish_reason"):
        await generate(client)
    server.reset(Action("sse", events=chat_events(["whole"], finish=None, done=True)))  # [DONE]: complete
    result = await generate(client)
    assert (result.text, result.finish_reason) == ("whole", "eos")


async def test_json_answer_and_usage(server: ScriptedServer, client: AsyncSteadyText) -> None:
    server.reset(Action("json", body=chat_doc("Whole answer", finish="length")))
    result = await generate(client)
    assert (result.text, result.finish_reason, result.usage.completion_tokens) == ("Whole answer", "length", 2)


async def _wait_abandoned(server: ScriptedServer, count: int) -> None:
    for _ in range(200):  # ≤ 10 s
        if server.abandoned >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the client never closed the stream")


async def test_leaving_a_stream_closes_it(server: ScriptedServer, client: AsyncSteadyText) -> None:
    server.reset(Action("stall", events=chat_events(["first"], finish=None, done=False)))
    stream = client.stream("hi", model="faulty:m", unsafe_mode=True)
    first = await asyncio.wait_for(anext(stream), GUARD)
    assert isinstance(first, Chunk) and first.text == "first"
    await asyncio.wait_for(stream.aclose(), GUARD)  # type: ignore[attr-defined]
    await _wait_abandoned(server, 1)


async def test_cancelling_a_stream_closes_it(server: ScriptedServer) -> None:
    """Provider level, on this loop: cancelling the consuming task closes the HTTP stream."""
    server.reset(Action("stall", events=chat_events(["first"], finish=None, done=False)))
    provider = OpenAICompatProvider(get_preset("slowdeadline", {}))
    request = build_request("hi", model="slowdeadline:m", unsafe_mode=True)
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(ModelSpec(provider="slowdeadline", name="m"), request):
            got_first.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(got_first.wait(), GUARD)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _wait_abandoned(server, 1)
    finally:
        await provider.aclose()


async def test_cancelling_a_client_stream_closes_it(server: ScriptedServer, client: AsyncSteadyText) -> None:
    server.reset(Action("stall", events=chat_events(["first"], finish=None, done=False)))
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _ in client.stream("hi", model="slowdeadline:m", unsafe_mode=True):
            got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), GUARD)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _wait_abandoned(server, 1)


async def test_concurrent_requests_share_one_pool(server: ScriptedServer, client: AsyncSteadyText) -> None:
    server.reset()
    results = await asyncio.wait_for(asyncio.gather(*(generate(client) for _ in range(32))), GUARD)
    assert {r.text for r in results} == {"Hello"}
    assert len(server.requests) == 32 and server.connections <= 32
