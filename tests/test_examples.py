"""Every example in examples/ is exercised here."""

import asyncio
import json

import steadytext_async as st
from examples import fastapi_sse, flask_sse, gather_many, threadpool


def _sse_tokens(body: str) -> tuple[list[dict[str, object]], str]:
    events = [json.loads(line[len("data: ") :]) for line in body.splitlines() if line.startswith("data: ")]
    return events, "".join(str(e["token"]) for e in events if "token" in e)


def test_gather_many() -> None:
    results = asyncio.run(gather_many.main(max_new_tokens=8))
    assert results == [st.generate(p, max_new_tokens=8) for p in gather_many.PROMPTS]


def test_threadpool() -> None:
    results = threadpool.parallel_generation(threadpool.PROMPTS, max_new_tokens=6)
    for idx, prompt in enumerate(threadpool.PROMPTS):
        assert results[prompt] == st.generate(prompt, seed=idx, max_new_tokens=6)


def test_fastapi_sse() -> None:
    from fastapi.testclient import TestClient

    with TestClient(fastapi_sse.app) as client:
        r = client.post("/generate", json={"prompt": "Hello", "max_new_tokens": 8})
        assert r.status_code == 200
        assert r.json()["text"] == st.generate("Hello", max_new_tokens=8)
        assert r.json()["fallback"] is False
        with client.stream("POST", "/generate/stream", json={"prompt": "Hello", "max_new_tokens": 8}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            body = "".join(resp.iter_text())
        events, text = _sse_tokens(body)
        assert events[0] == {"status": "starting"} and events[-1] == {"status": "complete"}
        assert text == r.json()["text"]
        bad = client.post("/generate", json={"prompt": "Hello", "max_new_tokens": 0})
        assert bad.status_code == 422


def test_flask_sse() -> None:
    client = flask_sse.app.test_client()
    r = client.post("/generate", json={"prompt": "Hello", "max_tokens": 8})
    assert r.status_code == 200
    text = r.get_json()["generated_text"]
    assert text == st.generate("Hello", max_new_tokens=8)
    body = client.post("/generate/stream", json={"prompt": "Hello", "max_tokens": 8}).get_data(as_text=True)
    events, streamed = _sse_tokens(body)
    assert events[0] == {"status": "starting"} and events[-1] == {"status": "complete"}
    assert streamed == text
    assert client.post("/generate", json={"prompt": ""}).status_code == 400
