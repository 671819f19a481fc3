"""Client lifecycle: closed clients are freed; a model that failed to load is retried later."""

from __future__ import annotations

import asyncio
import gc
import shutil
import weakref
from pathlib import Path

import pytest

import steadytext_async as st
from steadytext_async._worker.parent import pool as pool_module

pytestmark = pytest.mark.model  # drives worker processes (see conftest: one asyncio loop)


async def test_closed_clients_are_freed() -> None:
    refs = []
    for _ in range(60):
        async with st.AsyncSteadyText(workers=1, threads=1) as client:
            refs.append(weakref.ref(client))
    del client
    gc.collect()
    alive = sum(ref() is not None for ref in refs)
    assert alive == 0, f"{alive} of 60 closed clients are still referenced"


async def test_dropped_client_stops_its_workers() -> None:
    from conftest import alive

    client = st.AsyncSteadyText(workers=1, threads=1)
    await client.preload()
    pids = client.worker_pids()
    assert pids and all(alive(p) for p in pids)
    del client
    gc.collect()
    for _ in range(200):
        if not any(alive(p) for p in pids):
            break
        await asyncio.sleep(0.05)
    assert not any(alive(p) for p in pids)


async def test_a_model_that_failed_to_load_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_spec: st.ModelSpec
) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 100)
    async with st.AsyncSteadyText(workers=1, threads=1, strict=True) as client:
        with pytest.raises(st.ModelUnavailableError, match="could not load model"):
            await client.generate("Hello", model=str(path), max_new_tokens=3)
        # remembered for a while: the broken file is not reloaded on every call
        with pytest.raises(st.ModelUnavailableError, match="could not load model"):
            await client.generate("Hello", model=str(path), max_new_tokens=3)
        assert model_spec.path is not None
        shutil.copyfile(model_spec.path, path)  # the file is fixed ...
        monkeypatch.setattr(pool_module, "FAILURE_TTL", 0.0)  # ... and the failure has expired
        r = await client.generate("Hello", model=str(path), max_new_tokens=3)
        assert r.usage.completion_tokens == 3 and not r.fallback
