"""Shared fixtures. Tests run offline on the embedded models: the default SmolLM2-135M-Instruct (chat) and, by name,
the base gemma-3-270m (raw continuation)."""

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Model tests must exercise the model, not replay cached bytes (and never touch the user's cache);
# the cache has its own tests, which enable it on temporary files.
os.environ["STEADYTEXT_DISABLE_CACHE"] = "1"
os.environ.pop("STEADYTEXT_CACHE_URL", None)  # a developer's shared Redis is never touched; Redis tests start their own
# The host-wide thread budget is the session's own (inherited by the subprocesses tests start), so other work on
# the machine cannot hold tokens that thread-share assertions count on.
os.environ["STEADYTEXT_BUDGET_DIR"] = tempfile.mkdtemp(prefix="steadytext-test-budget-")

import pytest

import steadytext_async as st
from steadytext_async._registry import EMBEDDED, GEMMA_BASE


@pytest.fixture(scope="session")
def model_spec() -> st.ModelSpec:
    """The default embedded model (SmolLM2-135M-Instruct, chat template), found and verified."""
    from steadytext_async._registry import embedded_model

    spec = embedded_model()
    assert spec.sha256 == EMBEDDED.sha256 and spec.prompt_format == "chat"
    return spec


@pytest.fixture(scope="session")
def gemma_spec() -> st.ModelSpec:
    """The base gemma-3-270m (raw prompts), assembled (once) and verified."""
    from steadytext_async._modelref import ModelRef
    from steadytext_async._registry import resolve_model

    settings = st.Settings.from_env()
    spec = resolve_model(
        ModelRef("registry", name=GEMMA_BASE.name), default_size="mini", default_path=None, model_dir=settings.model_dir
    )
    assert spec.sha256 == GEMMA_BASE.sha256 and spec.prompt_format == "raw"
    return spec


@pytest.fixture(scope="session")
def sdk() -> Iterator[st.SteadyText]:
    """One blocking client with the settings ``serve`` tests start servers with (``SDK_SETTINGS``: 1 worker, 2
    threads), shared by every test that needs in-process reference outputs rather than a pool of its own."""
    from _serve_helpers import SDK_SETTINGS

    with st.SteadyText(**SDK_SETTINGS) as client:
        yield client


@pytest.fixture(scope="session", autouse=True)
def _shutdown_default_client() -> object:
    yield None
    st.close()


# -- one batching self-test per session ----------------------------------------------------------------------------
# A pool's workers run the batching self-test (~10 CPU seconds) unless the verdict file beside the result cache
# already holds the verdict for this model, build, thread count and batch size. Tests give many clients and every
# `serve` a fresh cache directory, so each paid it again. Pools made through the engine share one session verdict file
# instead (its key still separates thread counts and batch sizes), and `serve` starts with a copy of it
# (tests/_serve_helpers.py). tests/test_batching.py tests the self-test itself and keeps its own files (but for
# tests marked `shared_verdicts`).
VERDICTS = Path(tempfile.mkdtemp(prefix="steadytext-test-verdicts-")) / "batch-verdicts.json"


def _seed_verdicts() -> None:
    """Start from the user's verdicts when there are any (read, never written: the key names the model file, the
    llama.cpp build, the CPU and the settings, so a verdict from another build or machine is never used)."""
    from steadytext_async._config import _default_cache_dir

    user = _default_cache_dir() / VERDICTS.name
    with contextlib.suppress(OSError):
        shutil.copyfile(user, VERDICTS)


_seed_verdicts()


def adopt_verdicts(path: Path) -> None:
    """Merge a test's own verdict file into the session's, so later pools of the same shape skip the self-test
    that test has just run (a verdict is a measurement of this machine, the same whoever measured it)."""
    import json

    from steadytext_async._worker.child import selftest

    for key, value in json.loads(path.read_text()).items():
        selftest.store_verdict(VERDICTS, key, value)


@pytest.fixture(autouse=True)
def _shared_batch_verdicts(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    module = getattr(request, "module", None)
    own = module is not None and module.__name__.rpartition(".")[2] == "test_batching"
    if own and request.node.get_closest_marker("shared_verdicts") is None:
        return
    from steadytext_async._engine.engine import Engine
    from steadytext_async._worker.parent.pool import Pool

    new_pool = Engine.new_pool

    def shared(self: Engine, settings: st.Settings) -> Pool:
        pool = new_pool(self, settings)
        pool.verdict_path = str(VERDICTS)  # read when a worker starts, never before
        return pool

    monkeypatch.setattr(Engine, "new_pool", shared)


def reap(pid: int, timeout: float = 60.0) -> int:
    """The exit code of the forked child ``pid``. One that has not exited within ``timeout`` seconds is killed and
    the test fails: a hung child must neither hang the test nor outlive the run."""
    deadline, pause = time.monotonic() + timeout, 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"forked child {pid} did not exit within {timeout:.0f} s")
        time.sleep(pause)
        pause = min(0.05, pause * 2)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Kill multiprocessing children a failed test left behind: the interpreter's exit joins every one of them, so a
    hung child would hang the run after its summary (and CI with it)."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.kill()
        child.join(5)


def alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def mock_default(monkeypatch: pytest.MonkeyPatch) -> Iterator[st.MockProvider]:
    """The module-level functions' default clients answer ``model="mock:..."`` from a MockProvider (no workers)."""
    from steadytext_async import _api

    mock = st.MockProvider()
    saved = dict(_api._defaults)
    _api._defaults.clear()
    monkeypatch.setattr(_api, "_new_default", lambda: st.AsyncSteadyText(providers={"mock": mock}))
    yield mock
    _api._defaults.clear()
    _api._defaults.update(saved)


def mock_text(prompt: str, max_new_tokens: int, **kw: Any) -> str:
    """What a default MockProvider answers for ``prompt`` (an independent expectation for the pipeline)."""
    from steadytext_async.providers.mock import default_tokens

    return "".join(default_tokens(st.GenerationRequest(prompt=prompt, max_new_tokens=max_new_tokens, **kw)))


# -- every async test runs on asyncio and on uvloop and fails if it blocks its loop (as anyio's plugin does) --------
# Every loop is in debug mode (`asyncio_debug` in pyproject.toml). Tests that drive the embedded model through worker
# processes are marked `model` (a module's `pytestmark`, or the `model_spec`/`gemma_spec`/`sdk` fixtures): they keep
# one asyncio loop and only log slow callbacks, since they are slow on a loaded machine anyway. Mark a test
# `blocks_loop` to keep both loops and debug mode but allow a slow callback (a sync call inside a loop, on purpose).
MODEL_FIXTURES = frozenset({"model_spec", "gemma_spec", "sdk"})
SLOW_CALLBACK = 0.5  # seconds a callback may hold the loop (generous: the machine is shared)


def _debug(factory: Callable[[], asyncio.AbstractEventLoop]) -> Callable[[], asyncio.AbstractEventLoop]:
    def make() -> asyncio.AbstractEventLoop:
        loop = factory()  # pytest-asyncio turns debug mode on (asyncio_debug)
        loop.slow_callback_duration = SLOW_CALLBACK
        return loop

    make.__name__ = factory.__module__.split(".")[0]
    return make


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "model: needs the embedded model (plain asyncio loop only)")
    config.addinivalue_line("markers", "blocks_loop: blocks its event loop on purpose (no slow-callback check)")
    config.addinivalue_line("markers", "shared_verdicts: a test_batching test that uses the session's verdicts")


def _fast(item: pytest.Item) -> bool:
    """True unless the test needs the model's worker processes (see above)."""
    if item.get_closest_marker("model") is not None:
        return False
    return not MODEL_FIXTURES.intersection(getattr(item, "fixturenames", ()))


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    if _fast(item):
        import uvloop

        return {"asyncio": _debug(asyncio.new_event_loop), "uvloop": _debug(uvloop.new_event_loop)}
    return {"asyncio": asyncio.new_event_loop}


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("Executing") and "took" in record.msg:
            self.seen.append(record.getMessage())


@pytest.fixture(autouse=True)
def _fail_on_blocked_loop(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test whose event loop is in debug mode fails when a callback held the loop over SLOW_CALLBACK seconds."""
    handler = _SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if handler.seen and _fast(request.node) and request.node.get_closest_marker("blocks_loop") is None:
        pytest.fail("blocking call on the event loop:\n" + "\n".join(handler.seen), pytrace=False)


@pytest.fixture
def held_builds(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Every wide context a worker builds from now on waits until the event is set (set at teardown)."""
    from steadytext_async._worker.child.widen import ContextBuild  # sets GGML_CPU_TILED_MM: only when used

    gate = threading.Event()

    def held(build: Any) -> ContextBuild:
        return ContextBuild(lambda: (gate.wait(120), build())[1])

    monkeypatch.setattr("steadytext_async._worker.child.worker.ContextBuild", held)
    yield gate
    gate.set()
