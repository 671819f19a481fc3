"""Remote connection pools are closed with their owner: at the end of the event loop that opened them (remote HTTP
runs on the caller's loop, with the result cache or without), or, on the engine loop (the sync shims'), when the
client that owned them is collected. Nothing is left for the garbage collector to find open
(each leaked socket used to surface as a ResourceWarning)."""

from __future__ import annotations

import asyncio
import gc
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


def test_with_the_cache_on_remote_connections_are_the_callers_loops(server: ScriptedServer, tmp_path: Path) -> None:
    """With the result cache on, a remote call's HTTP still runs on the caller's loop (before: on the engine loop,
    whose connections outlived the client); they are closed when that loop ends, the client dropped unclosed."""
    seen: dict[str, Any] = {}

    async def once() -> None:
        client = st.AsyncSteadyText(cache_disabled=False, cache_dir=tmp_path)
        result = await client.generate("hi", model="loopexit:m", unsafe_mode=True, max_new_tokens=4)
        assert result.text == "Hello"
        seen["provider"] = client._routers[asyncio.get_running_loop()].providers["loopexit"]
        engine_router = client._routers.get(engine().portal.loop)
        seen["engine_built"] = engine_router is not None and "loopexit" in engine_router.providers
        # dropped without aclose()

    def drop_and_wait() -> None:
        asyncio.run(once())
        gc.collect()

    assert resource_warnings(drop_and_wait) == []
    assert seen["provider"]._client is None and seen["engine_built"] is False
