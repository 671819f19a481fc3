"""Where a request goes is decided once (``_router.Route``) and every step reads it (model-free).

Before: local or remote was decided in 7 places with 3 predicates; a remote request ran on the caller's loop with the
cache off and on the engine's loop with it on; remote hot hits were never peeked (2 thread hops each), and local ones
only from the loop whose router had resolved the model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import steadytext_async as st
from steadytext_async import _router
from steadytext_async._engine.engine import engine
from steadytext_async._models import GenerationRequest, ModelSpec
from steadytext_async._validate import build_request
from steadytext_async.providers.base import ProviderChunk, ProviderDone


class Where(st.MockProvider):
    """Records the loop each generation ran on."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loops: list[asyncio.AbstractEventLoop] = []

    async def stream(
        self, spec: ModelSpec, request: GenerationRequest, *, sse: bool | None = None
    ) -> AsyncIterator[ProviderChunk | ProviderDone]:
        self.loops.append(asyncio.get_running_loop())
        async for event in super().stream(spec, request, sse=sse):
            yield event


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every crossing into the engine's loop (a test double around the portal's bridges)."""
    portal = engine().portal
    seen: list[str] = []
    for name in ("call", "run", "iterate", "iterate_sync"):
        real = getattr(portal, name)

        def spy(*args: Any, _real: Any = real, _name: str = name) -> Any:
            seen.append(_name)
            return _real(*args)

        monkeypatch.setattr(portal, name, spy)
    yield seen


@pytest.mark.parametrize("cache_disabled", [True, False])
async def test_a_remote_request_runs_on_the_callers_loop_cache_on_or_off(cache_disabled: bool, tmp_path: Path) -> None:
    where = Where(deterministic=False)
    options: dict[str, Any] = {"model": "where:m", "unsafe_mode": True, "max_new_tokens": 3}
    async with st.AsyncSteadyText(cache_disabled=cache_disabled, cache_dir=tmp_path, providers={"where": where}) as c:
        result = await c.generate("one", **options)
        items = [item async for item in c.stream("two", **options)]
    here = asyncio.get_running_loop()
    assert where.loops == [here, here]  # never the engine's loop
    assert not result.cached and isinstance(items[-1], st.GenerationResult) and not items[-1].cached
    assert result.deterministic is False


async def test_a_remote_hot_hit_is_peeked(tmp_path: Path, hops: list[str]) -> None:
    where = Where(deterministic=False)
    options: dict[str, Any] = {"model": "where:m", "unsafe_mode": True, "max_new_tokens": 3}
    async with st.AsyncSteadyText(cache_disabled=False, cache_dir=tmp_path, providers={"where": where}) as client:
        first = await client.generate("hot", **options)
        hops.clear()
        again = await client.generate("hot", **options)
        streamed = [item async for item in client.stream("hot", **options)]
        assert hops == []  # answered on the caller's thread: no engine hop
    assert (first.cached, again.cached, again.text) == (False, True, first.text)
    assert isinstance(streamed[-1], st.GenerationResult) and streamed[-1].text == first.text
    assert len(where.requests) == 1


async def test_the_gate_is_checked_before_a_peek(tmp_path: Path) -> None:
    """A hot entry of a best-effort provider is not an answer to a request without unsafe_mode."""
    where = Where(deterministic=False)
    async with st.AsyncSteadyText(cache_disabled=False, cache_dir=tmp_path, providers={"where": where}) as client:
        await client.generate("gated", model="where:m", unsafe_mode=True, max_new_tokens=3)
        with pytest.raises(st.UnsafeModeRequiredError):
            await client.generate("gated", model="where:m", max_new_tokens=3)


def test_a_local_model_resolved_on_one_loop_is_known_on_every_loop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    resolved = ModelSpec(name="m", path="/m.gguf", sha256="a" * 64)
    calls: list[object] = []

    def resolve(ref: object, **kwargs: object) -> ModelSpec:
        calls.append(ref)
        return resolved

    monkeypatch.setattr(_router, "resolve_model", resolve)
    client = st.AsyncSteadyText(cache_disabled=False, cache_dir=tmp_path)
    request = build_request("hi", model="gemma-3-270m", max_new_tokens=2)

    async def on_a_loop() -> _router.Route:
        return await client._router.route(request)

    route = asyncio.run(on_a_loop())
    elsewhere = client._router.resolved(request)  # no running loop: the engine loop's router (the sync shims')
    assert elsewhere is not None and elsewhere.spec == resolved and elsewhere.key == route.key
    assert (route.local, route.here, route.deterministic, route.cached) == (True, False, True, True)
    assert len(calls) == 1


def test_a_duck_typed_provider_gets_the_optional_members() -> None:
    class Duck:
        name = "duck"
        capabilities = st.MockProvider().capabilities

        def stream(self, spec: ModelSpec, request: GenerationRequest, *, sse: bool | None = None) -> Any:
            return st.MockProvider().stream(spec, request, sse=sse)

        async def aclose(self) -> None:
            pass

    with st.SteadyText(providers={"duck": Duck()}) as client:
        result = client.generate("hi", model="duck:m", max_new_tokens=3)
    assert result.provider == "duck" and result.usage.completion_tokens == 3
    # and it type-checks (mypy --strict runs over the tests): the client takes the required members only
    typed = st.AsyncSteadyText(providers={"duck": Duck()})
    assert typed.settings is not None
