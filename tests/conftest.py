"""Shared fixtures. Tests run offline on the embedded gemma-3-270m model."""

import os

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
