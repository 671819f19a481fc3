"""serve logs each server-side failure exactly once, whichever way it reaches the caller (model-free)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from steadytext_async import AsyncSteadyText, MockProvider
from steadytext_async._config import Settings
from steadytext_async._models import GenerationRequest, ModelSpec
from steadytext_async.providers.base import ProviderChunk, ProviderDone
from steadytext_async.providers.daemon import DAEMON_PATH
from steadytext_async.serve import ServeConfig, create_app

SETTINGS = Settings(cache_disabled=True, workers=1, threads=1)
SECRET = "boom at /srv/secret/path"


class Failing(MockProvider):
    """Fails with an unexpected error: before any piece for prompts starting with "early", else after one."""

    async def stream(
        self, spec: ModelSpec, request: GenerationRequest, *, sse: bool | None = None
    ) -> AsyncIterator[ProviderChunk | ProviderDone]:
        if not (request.prompt or "").startswith("early"):
            yield ProviderChunk("piece", [1])
        raise RuntimeError(SECRET)


def _app(**config: Any) -> Any:
    app = create_app(ServeConfig(settings=SETTINGS, allow_remote=True, preload=False, **config))
    app.state.serve.client = AsyncSteadyText(SETTINGS, providers={"mock": Failing()})
    return app


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if SECRET in r.getMessage()]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"prompt": "early"}),
        ("/v1/completions", {"prompt": "early", "stream": True}),  # fails before the first piece: an HTTP 500
        ("/v1/completions", {"prompt": "late", "stream": True}),  # fails mid-stream: an in-band error event
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "stream": True}),
    ],
)
async def test_an_unexpected_error_is_logged_once(
    path: str, body: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="steadytext_async")
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://serve", timeout=10) as c:
        response = await c.post(path, json={"model": "mock:m", "max_tokens": 4, **body})
    assert SECRET not in response.text  # the detail is the operator's
    ref = response.text.split("error id ")[1].split(";")[0]
    assert _logged(caplog) == [f"serve: internal_error (error id {ref}): {SECRET}"]


async def test_the_daemon_endpoint_logs_a_failure_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: an error after the daemon's stream started went to the peer only; the server's log had nothing.
    async def resolve(client: Any, request: GenerationRequest) -> ModelSpec:
        return ModelSpec(name="m", sha256="x", prompt_format="raw", path="/m.gguf")

    async def events(client: Any, spec: ModelSpec, request: GenerationRequest) -> AsyncIterator[ProviderChunk]:
        yield ProviderChunk("piece", [1])
        raise RuntimeError(SECRET)

    monkeypatch.setattr(AsyncSteadyText, "resolve_local", resolve)  # the client's door serve uses
    monkeypatch.setattr(AsyncSteadyText, "stream_local", events)
    caplog.set_level(logging.WARNING, logger="steadytext_async")
    body = {
        "request": {"prompt": "Hi", "max_new_tokens": 4},
        "model_sha256": "x",
        "prompt_format": "raw",
        "n_ctx": SETTINGS.n_ctx,
        "n_batch": SETTINGS.n_batch,
    }
    transport = httpx.ASGITransport(app=_app(daemon=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://serve", timeout=10) as c:
        response = await c.post(DAEMON_PATH, json=body)
    lines = response.text.splitlines()
    assert response.status_code == 200 and '"chunk"' in lines[0] and '"error"' in lines[-1]
    assert len(_logged(caplog)) == 1 and "internal_error" in _logged(caplog)[0]
