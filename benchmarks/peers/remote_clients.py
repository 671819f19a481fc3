"""Per-request cost of popular OpenAI-compatible clients over raw httpx, in one process, same loopback server.

Runs in the LiteLLM peer venv (``benchmarks/run`` builds it): raw ``httpx.AsyncClient.post``, ``openai.AsyncOpenAI``
and ``litellm.acompletion``, each non-streamed and streamed (SSE), against the instant-answer server of
``tests/_remote_servers.py`` (started with the project's interpreter; TCP_NODELAY). Rounds are interleaved; each
figure is the median over all rounds. ``bench_remote.py`` measures our router against raw httpx the same way in
the project's venv, so both overheads are "over raw httpx in the same process". Prints ``client_p50`` lines.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
MAX_TOKENS = 16
Call = Callable[[int], Awaitable[str]]


def emit(name: str, **fields: Any) -> None:
    print(json.dumps({"figure": name, **fields}), flush=True)


def version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def clients(base: str) -> dict[tuple[str, str], Call]:
    import httpx
    from httpx_sse import EventSource

    raw = httpx.AsyncClient(timeout=30)
    url = f"{base}/chat/completions"

    def body(i: int, stream: bool) -> dict[str, Any]:
        return {
            "model": "m",
            "messages": [{"role": "user", "content": f"hello {i}"}],
            "max_tokens": MAX_TOKENS,
            "temperature": 0.0,
            "seed": 42,
            **({"stream": True} if stream else {}),
        }

    async def raw_json(i: int) -> str:
        r = await raw.post(url, json=body(i, False))
        return str(r.json()["choices"][0]["message"]["content"])

    async def raw_sse(i: int) -> str:
        parts = []
        async with raw.stream("POST", url, json=body(i, True)) as r:
            async for event in EventSource(r).aiter_sse():
                if event.data != "[DONE]":
                    choices = json.loads(event.data)["choices"]
                    if choices and choices[0]["delta"].get("content"):
                        parts.append(choices[0]["delta"]["content"])
        return "".join(parts)

    out: dict[tuple[str, str], Call] = {("raw_httpx", "json"): raw_json, ("raw_httpx", "sse"): raw_sse}
    try:
        import openai

        oa = openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0)

        async def openai_json(i: int) -> str:
            r = await oa.chat.completions.create(**body(i, False))
            return str(r.choices[0].message.content)

        async def openai_sse(i: int) -> str:
            stream = await oa.chat.completions.create(**body(i, True))
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        out[("openai", "json")], out[("openai", "sse")] = openai_json, openai_sse
    except ImportError:
        pass
    try:
        import litellm

        litellm.suppress_debug_info = True

        async def litellm_call(i: int, stream: bool) -> Any:
            b = body(i, stream)
            b["model"] = "openai/m"
            return await litellm.acompletion(api_base=base, api_key="unused", **b)

        async def litellm_json(i: int) -> str:
            return str((await litellm_call(i, False)).choices[0].message.content)

        async def litellm_sse(i: int) -> str:
            r = await litellm_call(i, True)
            return "".join([c.choices[0].delta.content or "" async for c in r])

        out[("litellm", "json")], out[("litellm", "sse")] = litellm_json, litellm_sse
    except ImportError:
        pass
    return out


async def run(base: str, requests: int, rounds: int) -> None:
    calls = clients(base)
    samples: dict[tuple[str, str], list[float]] = {k: [] for k in calls}
    for call in calls.values():  # warm-up: connections, lazy imports
        for i in range(10):
            assert await call(i) == "Hello world"
    per_round = max(1, requests // rounds)
    for r in range(rounds):
        for key, call in calls.items():
            for i in range(per_round):
                t = time.perf_counter()
                text = await call((r + 1) * 100_000 + i)
                samples[key].append((time.perf_counter() - t) * 1e3)
                assert text == "Hello world", text
    versions = {name: version(name) for name in ("httpx", "openai", "litellm")}
    for (client, mode), values in samples.items():
        p50, raw = statistics.median(values), statistics.median(samples[("raw_httpx", mode)])
        emit(
            "client_p50",
            client=client,
            mode=mode,
            p50_ms=round(p50, 3),
            raw_httpx_p50_ms=round(raw, 3),
            overhead_ms=round(p50 - raw, 3),
            n=len(values),
            version=versions.get(client.replace("raw_", "")),
        )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300, help="timed requests per client and mode")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # set before import: no fetch from the internet
    t = time.perf_counter()
    import litellm  # noqa: F401  (cold import time, reported below)

    emit("cold_import", client="litellm", ms=round((time.perf_counter() - t) * 1e3, 1))
    python = os.environ.get("STEADYTEXT_BENCH_PROJECT_PYTHON", sys.executable)
    server = subprocess.Popen(
        [python, str(ROOT / "tests" / "_remote_servers.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        asyncio.run(run(f"http://127.0.0.1:{port}/v1", args.requests, args.rounds))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
