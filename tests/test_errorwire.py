"""Errors across boundaries (:mod:`steadytext_async._errorwire`): every registered error crosses the worker pipe, the
daemon's stream and ``serve`` as itself; a kind the registry does not know reads back as the fallback.

Before, each boundary kept its own list of class names: the pipe knew only ConstraintError (anything else became
WorkerError), the daemon three more (a ModelNotFoundError came back as a WorkerError), and ``serve`` an isinstance
chain of its own."""

from __future__ import annotations

import json
import logging

import pytest

import steadytext_async as st
from steadytext_async._errorwire import FALLBACK, KINDS, ErrorRecord, from_record, kind_of, to_record
from steadytext_async._exceptions import ConstraintError, SteadyTextError, WorkerError
from steadytext_async._worker.protocol import HEADER, ErrorFrame, decode_from_worker, encode_frame
from steadytext_async.providers.daemon import DaemonRefused, decode_event, encode_error
from steadytext_async.serve._errors import error_response
from steadytext_async.serve._sse import ShuttingDown

REGISTERED = [k.cls for k in KINDS.values()]


def _error(cls: type[SteadyTextError]) -> SteadyTextError:
    return ConstraintError("budget ran out", partial_text='{"a": ') if cls is ConstraintError else cls("boom")


def _same(back: BaseException, sent: SteadyTextError, origin: str) -> None:
    assert type(back) is type(sent)
    if isinstance(sent, ConstraintError):
        assert isinstance(back, ConstraintError)
        assert (str(back), back.partial_text) == ("budget ran out", '{"a": ')  # the caller's message, as it was
    else:
        assert str(back) == f"{origin}: boom"


def test_the_registry_is_every_public_error() -> None:
    public = {n for n in st.__all__ if n.endswith("Error") and issubclass(getattr(st, n), st.SteadyTextError)}
    assert set(KINDS) == public - {"SteadyTextError"}
    assert all(name == k.cls.__name__ for name, k in KINDS.items())


@pytest.mark.parametrize("cls", REGISTERED, ids=lambda c: c.__name__)
def test_through_the_worker_pipe(cls: type[SteadyTextError]) -> None:
    sent = _error(cls)
    frame = decode_from_worker(encode_frame(ErrorFrame(3, to_record(sent)))[HEADER.size :])
    assert isinstance(frame, ErrorFrame) and frame.rid == 3
    _same(from_record(frame.error, origin="worker"), sent, "worker")


@pytest.mark.parametrize("cls", REGISTERED, ids=lambda c: c.__name__)
def test_through_the_daemon_stream(cls: type[SteadyTextError]) -> None:
    sent = _error(cls)
    line = encode_error(sent)
    assert json.loads(line)["error"]["type"] == cls.__name__
    with pytest.raises(cls) as raised:
        decode_event(line)
    _same(raised.value, sent, "daemon")


@pytest.mark.parametrize("cls", REGISTERED, ids=lambda c: c.__name__)
def test_through_serve(cls: type[SteadyTextError], caplog: pytest.LogCaptureFixture) -> None:
    kind = KINDS[cls.__name__]
    with caplog.at_level(logging.WARNING, logger="steadytext_async"):
        status, body = error_response(_error(cls))
    code = "0" if issubclass(cls, st.RemoteStatusError) else kind.code  # the upstream status (none given here)
    assert (status, body["error"]["type"], body["error"]["code"]) == (kind.status, kind.type, code)
    assert ("partial_text" in body["error"]) is (cls is ConstraintError)


def test_a_remote_status_error_keeps_its_upstream_status_in_serve() -> None:
    status, body = error_response(st.RemoteRateLimitError("slow down", status_code=429))
    assert (status, body["error"]["code"]) == (502, "429")


def test_a_subclass_crosses_as_its_nearest_registered_class() -> None:
    class Exploded(WorkerError):
        pass

    assert to_record(Exploded("x")) == ErrorRecord("WorkerError", "x")
    assert kind_of(Exploded("x")) is KINDS["WorkerError"]
    assert kind_of(ValueError("x")) is None


@pytest.mark.parametrize(
    "kind",
    [
        "ValueError",  # a worker's own failure (a prompt that does not fit, a llama.cpp error)
        "SteadyTextError",  # a name of the exceptions module, but not registered: never looked up there
        "__import__('os').system('false')",
        "",
    ],
)
def test_an_unknown_kind_reads_back_as_the_fallback(kind: str) -> None:
    back = from_record(ErrorRecord(kind, "boom"), origin="worker")
    assert type(back) is FALLBACK is WorkerError
    assert str(back) == f"worker: {kind}: boom"
    with pytest.raises(WorkerError) as raised:
        decode_event(json.dumps({"error": {"type": kind, "message": "boom"}}).encode())
    assert type(raised.value) is WorkerError and str(raised.value) == f"daemon: {kind}: boom"


def test_a_worker_failure_that_is_no_steadytext_error_keeps_its_name() -> None:
    record = to_record(ValueError("max_new_tokens=9 leaves no room for the prompt"))
    assert record == ErrorRecord("ValueError", "max_new_tokens=9 leaves no room for the prompt")
    back = from_record(record, origin="worker")
    assert isinstance(back, WorkerError) and "ValueError: max_new_tokens=9" in str(back)


def test_a_stopping_daemon_sends_a_retryable_error_and_the_caller_runs_it_in_process() -> None:
    line = encode_error(ShuttingDown(), retryable=True)
    assert json.loads(line)["error"]["retryable"] is True
    with pytest.raises(DaemonRefused, match="shutting down"):
        decode_event(line)
    with pytest.raises(WorkerError):  # the same error, not marked retryable: a failure of the request
        decode_event(encode_error(ShuttingDown()))


@pytest.mark.parametrize(
    "error",
    [{"type": 1, "message": "x"}, {"type": "WorkerError"}, {"type": "WorkerError", "message": "x", "partial_text": 5}],
)
def test_a_malformed_error_is_refused(error: object) -> None:
    with pytest.raises(DaemonRefused):  # the caller generates in-process
        decode_event(json.dumps({"error": error}).encode())
