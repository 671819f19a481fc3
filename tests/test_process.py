"""``_process``: the one place that knows about fork (lifetimes and the hooks every fork runs)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest
from conftest import reap

from steadytext_async import _process

PACKAGE = Path(_process.__file__).parent


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_hooks_run_in_order_and_a_failing_one_does_not_stop_the_others(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_process, "_hooks", [])  # only this test's hooks (the package's still run on other forks)
    seen: list[str] = []
    read, write = os.pipe()

    def child(name: str) -> None:
        os.write(write, f"{name},".encode())

    def broken() -> None:
        raise RuntimeError("hook failed")

    _process.on_fork(before=lambda: seen.append("before a"), parent=lambda: seen.append("parent a"))
    _process.on_fork(before=broken, parent=broken, child=broken)
    _process.on_fork(
        before=lambda: seen.append("before b"), parent=lambda: seen.append("parent b"), child=lambda: child("b")
    )
    _process.on_fork(child=lambda: child("c"))
    _process.on_fork(before=lambda: seen.append("before first"), parent=lambda: seen.append("parent first"), order=-1)
    parent_lifetime = _process.current()
    with caplog.at_level(logging.ERROR, logger="steadytext_async"):
        pid = os.fork()
        if pid == 0:  # the child: a new lifetime, its hooks in reverse order
            code = 1
            try:
                if not parent_lifetime.here and _process.current().here and _process.current().pid == os.getpid():
                    child("new lifetime")
                    code = 0
            finally:
                os._exit(code)
    os.close(write)
    assert reap(pid, 30) == 0
    with os.fdopen(read) as f:
        assert f.read() == "c,b,new lifetime,"
    # by order, then registration; the first taken is released last
    assert seen == ["before first", "before a", "before b", "parent b", "parent a", "parent first"]
    assert [r.getMessage().startswith("fork hook") for r in caplog.records] == [True, True]  # before and parent
    assert parent_lifetime.here and _process.current() is parent_lifetime


def test_only_process_knows_about_fork() -> None:
    """Every other module asks ``_process`` (``on_fork``, ``Lifetime.here``) instead of registering fork hooks or
    comparing pids of its own."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_process.py":
            continue
        text = path.read_text()
        if "register_at_fork" in text or re.search(r"[!=]=\s*os\.getpid\(\)|os\.getpid\(\)\s*[!=]=", text):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []
