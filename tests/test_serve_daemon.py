"""Daemon mode: ``STEADYTEXT_DAEMON_URL`` sends local generations to a running ``serve``; results (text, token ids,
logprobs, fingerprints) are byte-identical to in-process ones; an unreachable or mismatched daemon means in-process
generation with exactly one warning."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from _remote_servers import free_port
from _serve_helpers import SDK_SETTINGS, ServeProcess, metric, same_fingerprint, serve

from steadytext_async import GenerationResult
from steadytext_async._options import RequestOptions
from steadytext_async._sync import SteadyText

CALLS: list[tuple[str, RequestOptions]] = [
    ("The three primary colors are", {"max_new_tokens": 12}),
    ("Count: one, two,", {"max_new_tokens": 10, "return_logprobs": True}),
    ("My favourite colour is", {"choices": ["red", "green", "blue"], "max_new_tokens": 8}),
    ("A year:", {"regex": "[12][0-9]{3}", "max_new_tokens": 8, "return_logprobs": True}),
    ("Roll the dice:", {"max_new_tokens": 8, "temperature": 0.8, "seed": 3, "eos_string": "."}),
]


def _same(a: GenerationResult, b: GenerationResult) -> None:
    assert a.text == b.text
    assert a.token_ids == b.token_ids
    assert a.logprobs == b.logprobs  # pydantic equality: every float bitwise equal
    assert (a.finish_reason, a.usage, a.provider, a.model) == (b.finish_reason, b.usage, b.provider, b.model)
    assert same_fingerprint(a.fingerprint.model_dump(), b.fingerprint.model_dump())


@pytest.fixture(scope="module")
def goldens(sdk: SteadyText) -> list[GenerationResult]:
    return [sdk.generate(prompt, **kwargs) for prompt, kwargs in CALLS]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("daemon")
    with serve(tmp, "--daemon", uds=str(tmp / "engine.sock")) as srv:
        yield srv


def test_socket_is_private(daemon: ServeProcess) -> None:
    assert daemon.uds is not None and (Path(daemon.uds).stat().st_mode & 0o777) == 0o600


def test_daemon_results_are_byte_identical(daemon: ServeProcess, goldens: list[GenerationResult]) -> None:
    before = daemon.health()["generations"]
    with SteadyText(daemon_url=f"unix://{daemon.uds}", **SDK_SETTINGS) as client:
        for (prompt, kwargs), golden in zip(CALLS, goldens, strict=True):
            _same(client.generate(prompt, **kwargs), golden)
        streamed = list(client.stream(CALLS[1][0], **CALLS[1][1]))
        assert isinstance(streamed[-1], GenerationResult)
        _same(streamed[-1], goldens[1])
        assert "".join(c.text for c in streamed[:-1]) == goldens[1].text
        assert client.worker_pids() == []  # nothing ran in this process
    assert daemon.health()["generations"] == before + len(CALLS) + 1  # the daemon ran every one


def test_daemon_over_http(tmp_path: Path, goldens: list[GenerationResult]) -> None:
    with serve(tmp_path, "--daemon") as srv, SteadyText(daemon_url=srv.url, **SDK_SETTINGS) as client:
        _same(client.generate(CALLS[3][0], **CALLS[3][1]), goldens[3])
        assert client.worker_pids() == []
        assert metric(srv.metrics(), 'steadytext_requests_total{endpoint="daemon",status="200"}') == 1


def test_unreachable_daemon_falls_back_with_one_warning(
    goldens: list[GenerationResult], caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="steadytext_async"), SteadyText(daemon_url=url, **SDK_SETTINGS) as c:
        for (prompt, kwargs), golden in zip(CALLS[:2], goldens[:2], strict=True):
            _same(c.generate(prompt, **kwargs), golden)
        assert c.worker_pids() != []  # generated in-process
    warnings = [r for r in caplog.records if "daemon" in r.getMessage()]
    assert len(warnings) == 1 and url in warnings[0].getMessage()


def test_mismatched_daemon_falls_back(daemon: ServeProcess, caplog: pytest.LogCaptureFixture) -> None:
    """A daemon with other settings that change the bytes (n_batch here) is not used."""
    with SteadyText(n_batch=256, **SDK_SETTINGS) as sdk:
        golden = sdk.generate(CALLS[0][0], **CALLS[0][1])
    before = daemon.health()["generations"]
    url = f"unix://{daemon.uds}"
    with (
        caplog.at_level(logging.WARNING, logger="steadytext_async"),
        SteadyText(daemon_url=url, n_batch=256, **SDK_SETTINGS) as client,
    ):
        _same(client.generate(CALLS[0][0], **CALLS[0][1]), golden)
    assert daemon.health()["generations"] == before
    assert [r for r in caplog.records if "409" in r.getMessage() and "n_batch" in r.getMessage()]


def test_daemon_dying_mid_stream_resumes_in_process(tmp_path: Path, sdk: SteadyText) -> None:
    """The daemon is SIGKILLed mid-stream: the in-process pool re-runs the request, skips the text already
    delivered, and the caller gets exactly the in-process bytes."""
    prompt = "Once upon a time"
    kwargs: RequestOptions = {"max_new_tokens": 48, "return_logprobs": True}
    golden = sdk.generate(prompt, **kwargs)
    with (
        serve(tmp_path, "--daemon", uds=str(tmp_path / "engine.sock")) as srv,
        SteadyText(daemon_url=f"unix://{srv.uds}", **SDK_SETTINGS) as client,
    ):
        items = []
        for item in client.stream(prompt, **kwargs):
            items.append(item)
            if len(items) == 3:
                os.killpg(srv.proc.pid, signal.SIGKILL)
        assert isinstance(items[-1], GenerationResult)
        _same(items[-1], golden)
        assert "".join(c.text for c in items[:-1]) == golden.text
        assert client.worker_pids() != []  # finished in-process


def test_preload_reaches_the_daemon_provider() -> None:
    """Regression: ``preload()`` skipped every provider but LocalProvider, so in daemon mode it did nothing. Now it
    asks a live daemon for its health (the daemon owns the workers) and preloads in-process when none answers."""
    from _remote_servers import Action, ScriptedServer

    with ScriptedServer() as srv:
        srv.default = Action("json", body={"status": "ok"})
        with SteadyText(daemon_url=f"http://127.0.0.1:{srv.port}", **SDK_SETTINGS) as client:
            client.preload()
            assert [(r.method, r.path) for r in srv.requests] == [("GET", "/health")]
            assert client.worker_pids() == []  # the daemon's workers, none here
    with SteadyText(daemon_url=f"http://127.0.0.1:{free_port()}", **SDK_SETTINGS) as client:
        client.preload()
        assert len(client.worker_pids()) == SDK_SETTINGS["workers"]  # nothing listens: started in-process
