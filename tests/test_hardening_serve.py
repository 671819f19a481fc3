"""Hardening round 2 (issue 25), ``serve``: the daemon endpoint (H1), model downloads (M1), body limits (M2),
connection limits and header deadlines (M3), validation off the loop (M4), abandoned streams (M5), the metrics'
memory (M6), parse errors (L1), unix-socket takeover (L5) and what error bodies and /health reveal (L8).

Everything runs in-process on ``MockProvider`` (no model), except the M3 test, which runs uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from steadytext_async import AsyncSteadyText, MockProvider
from steadytext_async._config import Settings
from steadytext_async._exceptions import ModelUnavailableError, WorkerError
from steadytext_async._models import GenerationRequest, ModelSpec
from steadytext_async._validate import build_request
from steadytext_async.providers.base import ProviderChunk, ProviderDone
from steadytext_async.providers.daemon import DAEMON_PATH
from steadytext_async.serve import ServeConfig, create_app
from steadytext_async.serve import _app as serve_app

SETTINGS = Settings(cache_disabled=True, workers=1, threads=1)


def _app(provider: Any = None, **config: Any) -> Any:
    app = create_app(ServeConfig(settings=SETTINGS, allow_remote=True, preload=False, **config))
    app.state.serve.client = AsyncSteadyText(SETTINGS, providers={"mock": provider or MockProvider()})
    return app


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve", timeout=10)


def _completion(**extra: Any) -> dict[str, Any]:
    return {"model": "mock:m", "prompt": "Hello there", "max_tokens": 4, **extra}


# -- H1: the daemon endpoint ---------------------------------------------------------------------------------------


def _daemon_body(**request: Any) -> dict[str, Any]:
    return {
        "request": {"prompt": "Hi", **request},
        "model_sha256": "x",
        "prompt_format": "raw",
        "n_ctx": SETTINGS.n_ctx,
        "n_batch": SETTINGS.n_batch,
    }


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> list[GenerationRequest]:
    """Requests that reached model resolution (which may download); resolution itself refuses them afterwards."""
    calls: list[GenerationRequest] = []

    async def resolve(client: Any, request: GenerationRequest) -> ModelSpec:
        calls.append(request)
        raise ModelUnavailableError("resolution reached")

    monkeypatch.setattr(AsyncSteadyText, "resolve_local", resolve)  # the client's door serve uses
    return calls


async def test_daemon_endpoint_is_off_unless_enabled(resolved: list[GenerationRequest]) -> None:
    async with _client(_app()) as c:
        response = await c.post(DAEMON_PATH, json=_daemon_body(max_new_tokens=4))
    assert response.status_code == 404
    assert resolved == []


@pytest.mark.parametrize(
    ("request_fields", "status"),
    [
        ({"top_logprobs": 262144, "logprobs": True}, 400),  # a 106 MB reply from one request
        ({"max_new_tokens": 0}, 400),
        ({"max_new_tokens": -100}, 400),
        ({"sampling": {"temperature": -1.0}}, 400),
        ({"eos_string": ""}, 400),
        ({"constraint": {"kind": "regex", "canonical": '{"kind":"regex","pattern":"(a"}'}}, 400),  # not normalized
        ({"constraint": {"kind": "choices", "canonical": '{"choices":["a"],"kind":"choices"}'}}, 400),  # not canonical
        ({"prompt": None, "messages": [{"role": "user", "content": "hi", "name": ""}]}, 400),  # checked again
        ({"model_repo": "someone/big", "model_filename": "huge.gguf"}, 409),  # a caller-named Hub file
        ({"model": "/etc/passwd.gguf"}, 409),
    ],
)
async def test_daemon_endpoint_validates_like_the_sdk(
    request_fields: dict[str, Any], status: int, resolved: list[GenerationRequest]
) -> None:
    async with _client(_app(daemon=True)) as c:
        response = await c.post(DAEMON_PATH, json=_daemon_body(**request_fields))
    assert response.status_code == status, response.text
    assert resolved == []  # refused before anything resolves (or downloads)


async def test_daemon_endpoint_refuses_models_not_on_the_host(
    resolved: list[GenerationRequest], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty Hub cache
    async with _client(_app(daemon=True)) as c:
        response = await c.post(DAEMON_PATH, json=_daemon_body(size="large"))
        accepted = await c.post(DAEMON_PATH, json=_daemon_body(size="mini", max_new_tokens=4))
    assert response.status_code == 403 and response.json()["error"]["code"] == "model_not_downloaded"
    assert accepted.status_code == 503  # the embedded model passes the gate and reaches resolution
    assert [r.size for r in resolved] == ["mini"]


# -- M1: a request's model never downloads without --allow-download; a failed load is not a 200 ------------------


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    import huggingface_hub.constants

    from steadytext_async import _registry

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    calls: list[str] = []

    def download(repo: str, filename: str) -> Path:
        calls.append(f"{repo}/{filename}")
        raise ModelUnavailableError(f"offline test: could not get {filename} into /home/someone/.cache")

    monkeypatch.setattr(_registry, "_hub_download", download)
    return calls


@pytest.mark.parametrize("model", ["small", "large", "gemma-3-4b-it"])
async def test_serve_model_does_not_download(model: str, downloads: list[str]) -> None:
    async with _client(_app()) as c:
        response = await c.post("/v1/completions", json=_completion(model=model))
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "model_not_downloaded"
    assert downloads == []


async def test_serve_model_that_fails_to_load_is_503_not_fallback(downloads: list[str]) -> None:
    app = _app(allow_download=True)
    app.state.serve.client = AsyncSteadyText(  # as the lifespan makes it
        dataclasses.replace(SETTINGS, strict=True), providers={"mock": MockProvider()}
    )
    async with _client(app) as c:
        response = await c.post("/v1/completions", json=_completion(model="small"))
    assert downloads == ["ggml-org/gemma-3-1b-it-GGUF/gemma-3-1b-it-Q4_K_M.gguf"]
    assert response.status_code == 503, response.text
    assert "/home/someone" not in response.text  # L8: no paths in error bodies


def test_lifespan_client_is_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Settings] = []

    class Recorder(AsyncSteadyText):
        def __init__(self, settings: Settings) -> None:
            made.append(settings)
            super().__init__(settings)

    monkeypatch.setattr(serve_app, "AsyncSteadyText", Recorder)
    app = create_app(ServeConfig(settings=SETTINGS, preload=False))

    async def cycle() -> None:
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(cycle())
    assert [s.strict for s in made] == [True]


# -- M2 and L1: request bodies -----------------------------------------------------------------------------------


async def test_body_over_the_limit_is_413_declared_or_streamed() -> None:
    body = json.dumps(_completion(prompt="x" * 5000)).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    async with _client(_app(max_body_bytes=2000)) as c:
        declared = await c.post("/v1/completions", content=body, headers={"content-type": "application/json"})
        streamed = await c.post("/v1/completions", content=chunks())  # chunked: no Content-Length
        small = await c.post("/v1/completions", json=_completion())
    assert (declared.status_code, streamed.status_code, small.status_code) == (413, 413, 200)
    assert declared.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"prompt": "x", "seed": ' + b"7" * 5000 + b"}"])
async def test_unparsable_bodies_are_400_not_500(raw: bytes) -> None:
    async with _client(_app()) as c:
        response = await c.post("/v1/completions", content=raw)
    assert response.status_code == 400, response.text
    assert "not valid JSON" in response.json()["error"]["message"]


# -- M3: connection cap, header deadline, bounded queue -----------------------------------------------------------


@pytest.fixture
def live_server() -> Iterator[tuple[int, Any]]:
    import uvicorn

    from steadytext_async.serve._run import bind, uvicorn_config

    app = _app(max_connections=3, header_timeout=0.5)
    config = app.state.serve.config
    sock = bind("127.0.0.1", 0, None)
    uv = uvicorn_config(app, config)
    uv.lifespan = "off"
    server = uvicorn.Server(uv)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1], server
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _closed_by_server(conn: socket.socket, within: float) -> bool:
    conn.settimeout(within)
    try:
        return conn.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_half_sent_requests_are_closed_and_connections_capped(live_server: tuple[int, Any]) -> None:
    port, _ = live_server
    slow = socket.create_connection(("127.0.0.1", port))
    slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
    assert _closed_by_server(slow, within=5.0)  # the header deadline (0.5 s here) closed it
    slow.close()
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        time.sleep(0.1)
        extra = socket.create_connection(("127.0.0.1", port))
        assert _closed_by_server(extra, within=0.4)  # over the cap: closed at once, before the header deadline
        extra.close()
    finally:
        for conn in held:
            conn.close()
    time.sleep(0.2)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        assert c.get("/health").json()["status"] == "ok"  # real requests are served again


class Gate:
    """A provider that holds every request before its first piece until ``release`` is set."""

    name = "mock"

    def __init__(self) -> None:
        self.capabilities = MockProvider().capabilities
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.started = 0
        self.cancelled = 0

    async def stream(
        self, spec: ModelSpec, request: GenerationRequest, *, sse: bool | None = None
    ) -> AsyncIterator[ProviderChunk | ProviderDone]:
        self.started += 1
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        yield ProviderChunk("ok", [1], None)
        yield ProviderDone(finish_reason="length", completion_tokens=1)

    async def aclose(self) -> None:
        return None


async def test_queue_is_bounded_with_429() -> None:
    gate = Gate()
    async with _client(_app(gate, max_queued=1)) as c:
        first = asyncio.ensure_future(c.post("/v1/completions", json=_completion()))
        await gate.entered.wait()
        second = await c.post("/v1/completions", json=_completion(prompt="other"))
        gate.release.set()
        assert (await first).status_code == 200
    assert second.status_code == 429 and second.json()["error"]["code"] == "queue_full"


# -- M4: validation off the loop ----------------------------------------------------------------------------------


async def test_validation_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []
    real = build_request  # what serve._app calls

    def recording(*args: Any, **kwargs: Any) -> GenerationRequest:
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(serve_app, "build_request", recording)
    schema = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(50)}}
    async with _client(_app()) as c:
        response = await c.post("/v1/completions", json=_completion(schema=schema, max_tokens=8))
    assert response.status_code in (200, 422), response.text
    assert threads and threading.main_thread() not in threads


# -- M5: a stream abandoned before its first piece is cancelled ----------------------------------------------------


async def test_stream_abandoned_before_its_first_piece_is_cancelled() -> None:
    gate = Gate()
    app = _app(gate)
    body = json.dumps(_completion(stream=True)).encode()
    leave = asyncio.Event()
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/completions",
        "raw_path": b"/v1/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "server": ("serve", 80),
        "client": ("127.0.0.1", 1),
    }
    task = asyncio.ensure_future(app(scope, receive, send))
    await gate.entered.wait()
    leave.set()  # the client goes away while the request waits for its first piece
    await asyncio.wait_for(task, 5)
    assert gate.cancelled == 1
    assert app.state.serve.metrics.in_flight_generations == 0
    assert next(m for m in sent if m["type"] == "http.response.start")["status"] == 499


# -- M6: /metrics does not keep results (and their prompts) alive -------------------------------------------------


async def test_metrics_do_not_hold_results() -> None:
    app = _app()
    async with _client(app) as c:
        response = await c.post("/v1/completions", json=_completion(prompt="p" * 100_000))
    assert response.status_code == 200
    gc.collect()
    assert len(app.state.serve.metrics._seen) == 0


# -- L5: a unix socket in use is not taken over --------------------------------------------------------------------


def test_uds_of_a_live_server_is_not_taken_over(tmp_path: Path) -> None:
    from steadytext_async.serve._run import bind

    path = str(tmp_path / "s.sock")
    first = bind("127.0.0.1", 0, path)
    try:
        with pytest.raises(OSError, match="another server is listening"):
            bind("127.0.0.1", 0, path)
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(path)  # still the first server's socket
        probe.close()
    finally:
        first.close()
    second = bind("127.0.0.1", 0, path)  # a stale socket file (nobody listens) is replaced
    second.close()


# -- L8: error bodies and /health ----------------------------------------------------------------------------------


class Broken(MockProvider):
    async def stream(
        self, spec: ModelSpec, request: GenerationRequest, *, sse: bool | None = None
    ) -> AsyncIterator[ProviderChunk | ProviderDone]:
        raise WorkerError("worker 4242 died: /home/alice/models/x.gguf: llama stderr: segfault")
        yield  # pragma: no cover


async def test_error_bodies_do_not_leak_paths_pids_or_stderr(caplog: pytest.LogCaptureFixture) -> None:
    async with _client(_app(Broken())) as c:
        response = await c.post("/v1/completions", json=_completion())
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert "4242" not in message and "/home/alice" not in message and "stderr" not in message
    ref = message.split("error id ")[1].split(";")[0]
    assert any(ref in r.getMessage() and "/home/alice" in r.getMessage() for r in caplog.records)  # logged


async def test_health_details_need_the_token() -> None:
    async with _client(_app(token="s3cret")) as c:
        anonymous = (await c.get("/health")).json()
        authorized = (await c.get("/health", headers={"Authorization": "Bearer s3cret"})).json()
    assert anonymous == {"status": "ok"}
    assert "worker_pids" in authorized and "version" in authorized
