"""Per-request overhead of the remote router vs raw httpx vs LiteLLM, against one instant-answer loopback server.

Run: ``python benchmarks/bench_remote.py [--requests 400] [--concurrency 64]`` (LiteLLM is measured when importable).
The server (``tests/_remote_servers.py``, TCP_NODELAY) runs in a subprocess so it does not share our GIL. Every
client sends the same chat request (unique prompt per request, so no cache can answer); rounds are interleaved and
each figure is the median of all rounds. Prints one JSON line per figure:

- ``p50_ms`` of each client, non-streamed and streamed (SSE);
- ``overhead_ms`` = client p50 - raw httpx p50 (``router_*`` = ``AsyncSteadyText.generate``/``stream``, which cross
  into the runtime thread; ``router_generate`` sends one non-streamed request, ``router_generate_json`` uses a
  provider fixed to one-document mode; the result cache is disabled for these;
  ``provider_*`` = :class:`OpenAICompatProvider` called on this loop);
- ``litellm_over_router`` = LiteLLM overhead / router overhead (target >= 5), and ``req_per_s`` at
  ``--concurrency`` concurrent requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import EventSource

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from steadytext_async import AsyncSteadyText  # noqa: E402
from steadytext_async._models import ModelSpec  # noqa: E402
from steadytext_async._validate import build_request  # noqa: E402
from steadytext_async.providers.openai_compat import OpenAICompatProvider  # noqa: E402
from steadytext_async.providers.presets import register_provider  # noqa: E402

MAX_TOKENS = 16
Call = Callable[[int], Awaitable[str]]


def emit(figure: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"figure": figure, "value": round(value, 4), "unit": unit, **extra}), flush=True)


def body(i: int, stream: bool) -> dict[str, Any]:
    b: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": f"hello {i}"}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "seed": 42,
    }
    if stream:
        b["stream"] = True
    return b


async def timed(call: Call, start: int, n: int) -> list[float]:
    out = []
    for i in range(start, start + n):
        t0 = time.perf_counter()
        text = await call(i)
        out.append((time.perf_counter() - t0) * 1000)
        assert text == "Hello world", text
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400, help="timed requests per client per mode")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "_remote_servers.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        asyncio.run(run(f"http://127.0.0.1:{port}/v1", args))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)


async def run(base: str, args: argparse.Namespace) -> None:
    url = f"{base}/chat/completions"
    preset = register_provider("bench", base_url=base, replace=True)
    raw = httpx.AsyncClient(timeout=30)
    provider = OpenAICompatProvider(preset)
    spec = ModelSpec(provider="bench", name="m")
    # The result cache is off: every request is a miss here, and the figure is the transport/router overhead.
    client = AsyncSteadyText(cache_disabled=True, providers={"benchjson": OpenAICompatProvider(preset, sse=False)})

    async def raw_json(i: int) -> str:
        r = await raw.post(url, json=body(i, False))
        r.raise_for_status()
        return str(r.json()["choices"][0]["message"]["content"])

    async def raw_sse(i: int) -> str:
        parts = []
        async with raw.stream("POST", url, json=body(i, True)) as r:
            async for event in EventSource(r).aiter_sse():  # to the end of the body: the connection is reused
                if event.data == "[DONE]":
                    continue
                delta = json.loads(event.data)["choices"]
                if delta and delta[0]["delta"].get("content"):
                    parts.append(delta[0]["delta"]["content"])
        return "".join(parts)

    def provider_call(sse: bool) -> Call:
        async def call(i: int) -> str:
            request = build_request(f"hello {i}", max_new_tokens=MAX_TOKENS)
            parts = [e.text async for e in provider.stream(spec, request, sse=sse) if hasattr(e, "text")]
            return "".join(parts)

        return call

    async def router_generate(i: int) -> str:
        result = await client.generate(f"hello {i}", model="bench:m", unsafe_mode=True, max_new_tokens=MAX_TOKENS)
        return result.text

    async def router_generate_json(i: int) -> str:
        result = await client.generate(f"hello {i}", model="benchjson:m", unsafe_mode=True, max_new_tokens=MAX_TOKENS)
        return result.text

    async def router_stream(i: int) -> str:
        items = [x async for x in client.stream(f"hello {i}", model="bench:m", unsafe_mode=True, max_new_tokens=16)]
        return str(items[-1].text)

    clients: dict[str, Call] = {
        "raw_httpx_json": raw_json,
        "provider_json": provider_call(False),
        "router_generate": router_generate,
        "router_generate_json": router_generate_json,
        "raw_httpx_sse": raw_sse,
        "provider_sse": provider_call(True),
        "router_stream": router_stream,
    }
    try:
        import openai

        oai = openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0)

        async def openai_json(i: int) -> str:
            r = await oai.chat.completions.create(**body(i, False))
            return str(r.choices[0].message.content)

        clients["openai_json"] = openai_json
    except ImportError:
        oai = None
    litellm_version = None
    try:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch from the internet at import
        import litellm  # type: ignore[import-not-found,unused-ignore]

        litellm_version = litellm.__version__ if hasattr(litellm, "__version__") else None
        if litellm_version is None:
            import importlib.metadata

            litellm_version = importlib.metadata.version("litellm")
        litellm.suppress_debug_info = True

        async def litellm_call(i: int, stream: bool) -> Any:
            return await litellm.acompletion(
                model="openai/m",
                api_base=base,
                api_key="unused",
                messages=[{"role": "user", "content": f"hello {i}"}],
                max_tokens=MAX_TOKENS,
                temperature=0.0,
                seed=42,
                stream=stream,
            )

        async def litellm_json(i: int) -> str:
            r = await litellm_call(i, False)
            return str(r.choices[0].message.content)

        async def litellm_sse(i: int) -> str:
            r = await litellm_call(i, True)
            return "".join([c.choices[0].delta.content or "" async for c in r])

        clients["litellm_json"] = litellm_json
        clients["litellm_sse"] = litellm_sse
    except ImportError:
        pass

    n = args.requests // args.rounds
    samples: dict[str, list[float]] = {name: [] for name in clients}
    for call in clients.values():  # warm-up: connections, imports, lazy setup
        await timed(call, 0, 20)
    for r in range(args.rounds):
        for name, call in clients.items():
            samples[name] += await timed(call, (r + 1) * 100_000, n)
    p50 = {name: statistics.median(v) for name, v in samples.items()}
    for name, value in p50.items():
        emit(f"{name}.p50", value, "ms", n=len(samples[name]))
    modes = (("json", "raw_httpx_json", ("provider_json", "router_generate_json", "router_generate")),
             ("sse", "raw_httpx_sse", ("provider_sse", "router_stream")))  # fmt: skip
    for mode, raw_name, ours in modes:
        for name in ours:
            emit(f"{name}.overhead_p50", p50[name] - p50[raw_name], "ms", over=raw_name)
        lite = f"litellm_{mode}"
        if lite in p50:
            lite_over = p50[lite] - p50[raw_name]
            emit(f"{lite}.overhead_p50", lite_over, "ms", over=raw_name, litellm=litellm_version)
            for router in ours[1:]:
                emit(f"litellm_over_{router}", lite_over / max(p50[router] - p50[raw_name], 1e-3), "ratio")

    async def burst(call: Call) -> float:
        t0 = time.perf_counter()
        total = 0
        for r in range(3):
            await asyncio.gather(*(call(r * 1000 + i) for i in range(args.concurrency)))
            total += args.concurrency
        return total / (time.perf_counter() - t0)

    rates: dict[str, float] = {}
    for name in ("raw_httpx_json", "openai_json", "provider_json", "router_generate_json", "router_generate",
                 "litellm_json"):  # fmt: skip
        if name in clients:
            rates[name] = await burst(clients[name])
            emit(f"{name}.req_per_s", rates[name], "req/s", concurrency=args.concurrency)
    if "openai_json" in rates:
        for name in ("router_generate", "router_generate_json"):
            emit(f"{name}_vs_openai.req_per_s", rates[name] / rates["openai_json"], "ratio", target=1.0)
    if oai is not None:
        await oai.close()
    await raw.aclose()
    await provider.aclose()
    await client.aclose()


if __name__ == "__main__":
    main()
