"""Shared fixtures. Tests run offline on the embedded gemma-3-270m model."""

import os
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Model tests must exercise the model, not replay cached bytes (and never touch the user's cache);
# the cache has its own tests, which enable it on temporary files.
os.environ["STEADYTEXT_DISABLE_CACHE"] = "1"
os.environ.pop("STEADYTEXT_CACHE_URL", None)  # a developer's shared Redis is never touched; Redis tests start their own

import pytest

import steadytext_async as st
from steadytext_async._registry import EMBEDDED


@pytest.fixture(scope="session")
def model_spec() -> st.ModelSpec:
    """The embedded model, assembled (once) and verified."""
    from steadytext_async._registry import embedded_model

    spec = embedded_model()
    assert spec.sha256 == EMBEDDED.sha256
    return spec


@pytest.fixture(scope="session", autouse=True)
def _shutdown_default_client() -> object:
    yield None
    st.close()


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
