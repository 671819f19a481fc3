"""Remote connection pools are closed with their owner: at the end of the event loop that opened them, or, on the
engine loop, when the client that owned them is collected. Nothing is left for the garbage collector to find open
(each leaked socket used to surface as a ResourceWarning)."""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _remote_servers import ScriptedServer

import steadytext_async as st
from steadytext_async._engine.engine import engine
from steadytext_async.providers.presets import register_provider, unregister_provider


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        register_provider("loopexit", base_url=srv.url, replace=True)
        yield srv
        unregister_provider("loopexit")


def resource_warnings(run: Callable[[], Any]) -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        run()
        gc.collect()
    return [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]


def runners() -> list[Callable[[Any], Any]]:
    import uvloop

    return [asyncio.run, uvloop.run]


@pytest.mark.parametrize("run", runners(), ids=["asyncio", "uvloop"])
def test_module_functions_close_their_loops_connections_at_loop_exit(
    server: ScriptedServer, run: Callable[[Any], Any]
) -> None:
    """The script pattern: ``asyncio.run(agenerate(...))`` several times, one default client per loop."""
    providers: list[Any] = []

    async def once() -> str:
        text = await st.agenerate("hi", model="loopexit:m", unsafe_mode=True, max_new_tokens=4)
        providers.append(st._api.default_client()._router.providers["loopexit"])
        assert providers[-1]._client is not None  # a live connection pool on this loop
        return str(text)

    server.reset()
    assert resource_warnings(lambda: [run(once()) for _ in range(3)]) == []
    assert [p._client for p in providers] == [None, None, None]  # closed while each loop shut down
    assert len({id(p) for p in providers}) == 3 and server.connections >= 3


def test_a_dropped_clients_engine_side_connections_are_closed(server: ScriptedServer, tmp_path: Path) -> None:
    """With the result cache on, remote calls run on the engine loop, which outlives the client."""
    seen: dict[str, Any] = {}

    async def once() -> None:
        client = st.AsyncSteadyText(cache_disabled=False, cache_dir=tmp_path)
        result = await client.generate("hi", model="loopexit:m", unsafe_mode=True, max_new_tokens=4)
        assert result.text == "Hello"
        seen["provider"] = client._routers[engine().portal.loop].providers["loopexit"]
        # dropped without aclose()

    def drop_and_wait() -> None:
        asyncio.run(once())
        gc.collect()
        deadline = time.monotonic() + 10
        while seen["provider"]._client is not None and time.monotonic() < deadline:
            time.sleep(0.01)

    assert resource_warnings(drop_and_wait) == []
    assert seen["provider"]._client is None
