"""The sync shims: plain scripts, many threads, inside a running loop; other event loops.

Everything but the end-to-end script and the worker-freeing check runs on a MockProvider (no model workers):
what is tested here is the crossing, not the model.
"""

import asyncio
import concurrent.futures
import subprocess
import sys

import pytest
from conftest import mock_text

import steadytext_async as st

PROMPT = "The capital of France is"
MOCK = "mock:m"


def test_plain_script() -> None:
    code = (
        "import steadytext_async as st\n"
        "a = st.generate('The capital of France is', max_new_tokens=8)\n"
        "b = ''.join(st.generate_iter('The capital of France is', max_new_tokens=8))\n"
        "assert a == b, (a, b)\n"
        "print(a)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == st.generate(PROMPT, max_new_tokens=8).strip()


def test_thread_pool_executor_pattern_from_the_original_docs(mock_default: st.MockProvider) -> None:
    prompts = [
        "Write a Python function for sorting",
        "Explain machine learning",
        "Create a REST API example",
        "Describe quantum computing",
    ]
    expected = {p: mock_text(p, 6) for p in prompts}
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as executor:
        futures = {executor.submit(st.generate, p, max_new_tokens=6, model=MOCK): p for p in prompts * 2}
        for future in concurrent.futures.as_completed(futures):
            # mypy binds submit() to one overload of the overloaded generate (the tuple one); it returns text here
            assert future.result(timeout=120) == expected[futures[future]]  # type: ignore[comparison-overlap]
    assert len(mock_default.requests) == 8


def test_sync_iter_from_many_threads(mock_default: st.MockProvider) -> None:
    expected = mock_text(PROMPT, 6)
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as executor:
        outs = list(executor.map(lambda _: "".join(st.generate_iter(PROMPT, max_new_tokens=6, model=MOCK)), range(3)))
    assert outs == [expected] * 3 and len(mock_default.requests) == 3


@pytest.mark.blocks_loop
async def test_sync_call_inside_running_loop_does_not_deadlock(mock_default: st.MockProvider) -> None:
    text = st.generate(PROMPT, max_new_tokens=6, model=MOCK)  # e.g. a sync helper called from async code (Jupyter)
    assert text == await st.agenerate(PROMPT, max_new_tokens=6, model=MOCK) == mock_text(PROMPT, 6)


def test_many_asyncio_run_calls_share_one_client(mock_default: st.MockProvider) -> None:
    first = asyncio.run(st.agenerate(PROMPT, max_new_tokens=6, model=MOCK))
    second = asyncio.run(st.agenerate(PROMPT, max_new_tokens=6, model=MOCK))
    assert first == second == mock_text(PROMPT, 6)
    assert len(mock_default.requests) == 2


def test_uvloop(mock_default: st.MockProvider) -> None:
    import uvloop

    async def main() -> str:
        pieces = [p async for p in st.agenerate_iter(PROMPT, max_new_tokens=6, model=MOCK)]
        text = await st.agenerate(PROMPT, max_new_tokens=6, model=MOCK)
        assert "".join(pieces) == text
        return str(text)

    assert uvloop.run(main()) == st.generate(PROMPT, max_new_tokens=6, model=MOCK) == mock_text(PROMPT, 6)


def test_sync_client_twin() -> None:
    mock = st.MockProvider()
    with st.SteadyText(providers={"mock": mock}) as client:
        r = client.generate(PROMPT, max_new_tokens=6, model=MOCK)
        items = list(client.stream(PROMPT, max_new_tokens=6, model=MOCK))
        assert isinstance(items[-1], st.GenerationResult)
        assert items[-1].text == r.text == "".join(i.text for i in items[:-1] if isinstance(i, st.Chunk))
        assert r.text == mock_text(PROMPT, 6) and r.provider == "mock" and r.deterministic
    assert client.worker_pids() == [] and len(mock.requests) == 2


def test_generate_keeps_original_positional_order(mock_default: st.MockProvider) -> None:
    text, logprobs = st.generate(PROMPT, 4, True, "[EOS]", MOCK)
    assert logprobs is not None and len(logprobs["content"]) == 4
    assert text == st.generate(PROMPT, max_new_tokens=4, model=MOCK) == mock_text(PROMPT, 4)
    assert st.generate(PROMPT, 4, False, " w", MOCK) == mock_text(PROMPT, 4).split(" w")[0]
    items = list(st.generate_iter(PROMPT, 4, "[EOS]", True, MOCK))
    assert "".join(i["token"] for i in items) == mock_text(PROMPT, 4) and len(items) == 4
    with pytest.raises(TypeError, match="multiple values for argument 'max_new_tokens'"):
        st.generate(PROMPT, 4, max_new_tokens=5)
    with pytest.raises(TypeError, match="at most 16 positional"):
        st.generate(PROMPT, *range(16))


def test_breaking_out_of_sync_iter_frees_the_worker() -> None:
    with st.SteadyText(workers=1, threads=2) as client:
        for n, _item in enumerate(client.stream("Once upon a time", max_new_tokens=400)):
            if n == 2:
                break
        pids = client.worker_pids()
        r = client.generate("Hello", max_new_tokens=3)
        assert r.usage.completion_tokens == 3
        assert client.worker_pids() == pids  # stopped by a cancel message, not killed
