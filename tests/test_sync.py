"""The sync shims: plain scripts, many threads, inside a running loop; other event loops."""

import asyncio
import concurrent.futures
import subprocess
import sys

import steadytext_async as st

PROMPT = "The capital of France is"


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


def test_thread_pool_executor_pattern_from_the_original_docs() -> None:
    prompts = [
        "Write a Python function for sorting",
        "Explain machine learning",
        "Create a REST API example",
        "Describe quantum computing",
    ]
    expected = {p: st.generate(p, max_new_tokens=6) for p in prompts}
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as executor:
        futures = {executor.submit(st.generate, p, max_new_tokens=6): p for p in prompts * 2}
        for future in concurrent.futures.as_completed(futures):
            assert future.result(timeout=120) == expected[futures[future]]


def test_sync_iter_from_many_threads() -> None:
    expected = "".join(st.generate_iter(PROMPT, max_new_tokens=6))  # type: ignore[arg-type]
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as executor:
        outs = list(executor.map(lambda _: "".join(st.generate_iter(PROMPT, max_new_tokens=6)), range(3)))  # type: ignore[arg-type]
    assert outs == [expected] * 3


async def test_sync_call_inside_running_loop_does_not_deadlock() -> None:
    text = st.generate(PROMPT, max_new_tokens=6)  # e.g. a sync helper called from async code (Jupyter cell)
    assert text == await st.agenerate(PROMPT, max_new_tokens=6)


def test_many_asyncio_run_calls_share_one_client() -> None:
    first = asyncio.run(st.agenerate(PROMPT, max_new_tokens=6))
    pids = st.default_client().worker_pids()
    second = asyncio.run(st.agenerate(PROMPT, max_new_tokens=6))
    assert first == second
    assert st.default_client().worker_pids() == pids  # same workers, no respawn per loop


def test_uvloop() -> None:
    import uvloop

    async def main() -> str:
        pieces = [p async for p in st.agenerate_iter(PROMPT, max_new_tokens=6)]
        text = await st.agenerate(PROMPT, max_new_tokens=6)
        assert "".join(pieces) == text  # type: ignore[arg-type]
        return str(text)

    assert uvloop.run(main()) == st.generate(PROMPT, max_new_tokens=6)


def test_sync_client_twin() -> None:
    with st.SteadyText(workers=1, threads=2) as client:
        r = client.generate(PROMPT, max_new_tokens=6)
        items = list(client.stream(PROMPT, max_new_tokens=6))
        assert isinstance(items[-1], st.GenerationResult)
        assert items[-1].text == r.text == "".join(i.text for i in items[:-1] if isinstance(i, st.Chunk))
        pids = client.worker_pids()
    assert client.worker_pids() == [] and pids


def test_generate_keeps_original_positional_order() -> None:
    text, logprobs = st.generate(PROMPT, 4, True)  # type: ignore[misc]
    assert logprobs is not None and len(logprobs["content"]) == 4
    assert text == st.generate(PROMPT, max_new_tokens=4)


def test_breaking_out_of_sync_iter_frees_the_worker() -> None:
    with st.SteadyText(workers=1, threads=2) as client:
        for n, _item in enumerate(client.stream("Once upon a time", max_new_tokens=400)):
            if n == 2:
                break
        pids = client.worker_pids()
        r = client.generate("Hello", max_new_tokens=3)
        assert r.usage.completion_tokens == 3
        assert client.worker_pids() == pids  # stopped by a cancel message, not killed
