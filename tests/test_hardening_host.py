"""Hardening round 2 (issue 25), the host: a host budget whose every slot is held elsewhere (M9), unusable budget
directories and model paths (L1), and the model checksum's sidecar (L6)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import reap

from steadytext_async._exceptions import InvalidRequestError, ModelNotFoundError
from steadytext_async._worker.parent.budget import HostBudget
from steadytext_async._worker.parent.threads import ThreadBudget

HOLD = """
import sys, time
from pathlib import Path
from steadytext_async._worker.parent.budget import HostBudget
budget = HostBudget(Path(sys.argv[1]), int(sys.argv[2]))
tokens = [budget.try_acquire() for _ in range(int(sys.argv[2]))]
assert all(tokens)
print("holding", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding both slots of a 2-slot budget in ``tmp_path / "budget"``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "budget"), "2"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        yield proc
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]


def _poll(budget: ThreadBudget, seconds: float) -> bool:
    """Call has_token(0) as the pool does (every few ms) for up to ``seconds``; True once it grants a thread."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if budget.has_token(0):
            return True
        time.sleep(0.02)
    return False


def test_a_stopped_holder_is_bypassed_after_a_bounded_wait_and_named(
    holder: subprocess.Popen[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.kill(holder.pid, signal.SIGSTOP)  # a Ctrl-Z'd CLI run: holds every slot, uses no core
    try:
        budget = ThreadBudget(2, HostBudget(tmp_path / "budget", 2), wait_limit=0.3, hard_limit=60)
        with caplog.at_level(logging.WARNING, logger="steadytext_async"):
            assert not budget.has_token(0)  # no token now
            assert _poll(budget, 5.0)  # ... but not forever
        assert budget.tokens == [] and budget.tokenless == 1  # one thread, without a token
        assert budget.total_for(1, newcomer=True) == 1
        message = next(r.getMessage() for r in caplog.records if "host decode thread" in r.getMessage())
        assert f"pid {holder.pid} (stopped)" in message
    finally:
        os.kill(holder.pid, signal.SIGCONT)


def test_a_running_holder_is_named_and_waited_for_up_to_the_hard_limit(
    holder: subprocess.Popen[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    budget = ThreadBudget(2, HostBudget(tmp_path / "budget", 2), wait_limit=0.2, hard_limit=1.5)
    with caplog.at_level(logging.WARNING, logger="steadytext_async"):
        assert not _poll(budget, 0.8)  # running holders: keep waiting past wait_limit
        named = [r.getMessage() for r in caplog.records if "host decode thread" in r.getMessage()]
        assert len(named) == 1 and f"pid {holder.pid} " in named[0] and "still waiting" in named[0]
        assert _poll(budget, 5.0)  # the hard limit: one thread anyway
    assert budget.tokenless == 1


def test_a_free_slot_is_taken_normally(tmp_path: Path) -> None:
    budget = ThreadBudget(2, HostBudget(tmp_path / "budget", 2), wait_limit=0.1, hard_limit=0.2)
    assert budget.has_token(0) and len(budget.tokens) == 1 and budget.tokenless == 0
    assert (tmp_path / "budget" / "slot-0").read_text().strip() == str(os.getpid())


@pytest.mark.parametrize("kind", ["file", "file-parent"])
def test_an_unusable_budget_directory_is_a_typed_error(tmp_path: Path, kind: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    directory = blocker if kind == "file" else blocker / "cores-2"
    budget = HostBudget(directory, 2)
    with pytest.raises(InvalidRequestError, match="budget directory"):
        budget.try_acquire()


def test_a_directory_in_place_of_a_slot_file_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "budget" / "slot-0").mkdir(parents=True)
    with pytest.raises(InvalidRequestError, match="budget directory"):
        HostBudget(tmp_path / "budget", 2).try_acquire()


# -- L1: model paths ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["~nosuchuser-zz9/m.gguf", "a" * 5000 + ".gguf", "x/" * 3000 + "m.gguf"])
def test_unusable_model_paths_are_model_not_found(model: str) -> None:
    from steadytext_async._validate import build_request

    with pytest.raises(ModelNotFoundError):
        build_request("Hi", model=model)


# -- L6: the sha256 sidecar cannot vouch for an edited file ---------------------------------------------------------


def test_an_edited_model_with_its_mtime_restored_is_hashed_again(tmp_path: Path) -> None:
    from steadytext_async._registry import file_sha256

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 4096)
    first = file_sha256(model)
    st = model.stat()
    with model.open("r+b") as f:  # same size, one byte changed
        f.seek(100)
        f.write(b"\1")
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the mtime put back
    second = file_sha256(model)
    assert second != first
    import hashlib

    assert second == hashlib.sha256(model.read_bytes()).hexdigest()


def test_a_hub_model_edited_in_the_hf_cache_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub entries are checked against the sha256 the Hub announced (the cached blob's name)."""
    import hashlib

    from steadytext_async import _registry
    from steadytext_async._exceptions import ModelUnavailableError
    from steadytext_async._modelref import ModelRef

    original = b"GGUF original weights"
    blobs = tmp_path / "hub" / "blobs"
    blobs.mkdir(parents=True)
    blob = blobs / hashlib.sha256(original).hexdigest()
    blob.write_bytes(b"GGUF tampered weights")  # edited after the download
    snapshot = tmp_path / "hub" / "snapshots" / "rev" / "gemma-3-1b-it-Q4_K_M.gguf"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(blob)
    monkeypatch.setattr(_registry, "_hub_download", lambda repo, filename: snapshot)
    ref = ModelRef("size", name="small")
    with pytest.raises(ModelUnavailableError, match="expected"):
        _registry.resolve_model(ref, default_size="mini", default_path=None, model_dir=tmp_path)
    blob.write_bytes(original)
    spec = _registry.resolve_model(ref, default_size="mini", default_path=None, model_dir=tmp_path)
    assert spec.sha256 == hashlib.sha256(original).hexdigest()


def test_a_child_forked_while_waiting_does_not_keep_announcing_a_waiter(tmp_path: Path) -> None:
    """A flock belongs to the open file, which a forked child shares: a child forked while its parent waited kept
    the "waiting" announcement for its whole life (and one forked during the "others waiting" probe kept the
    probe's exclusive lock, which blocked every waiter on the host: seen as a hung test_fork). The child now drops
    its copies at fork, and the probe never overlaps a fork."""
    import os
    import time

    from steadytext_async._worker.parent.budget import HostBudget

    budget = HostBudget(tmp_path, 2)
    started, ready = os.pipe()
    with budget.waiting():
        pid = os.fork()
        if pid == 0:  # the child outlives the parent's wait
            os.write(ready, b"x")
            time.sleep(3)
            os._exit(0)
        assert os.read(started, 1) == b"x"  # the child runs (its fork hooks ran)
    os.close(started)
    os.close(ready)
    try:
        assert not budget.others_waiting()  # before the fix: True until the child exited
    finally:
        assert reap(pid, 30) == 0
