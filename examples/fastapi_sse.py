"""FastAPI app with a JSON endpoint and a Server-Sent Events streaming endpoint.

    pip install fastapi uvicorn && uvicorn examples.fastapi_sse:app

When the client disconnects, the response generator is cancelled, which stops the decode and frees the worker.
"""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

import steadytext_async as steadytext


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await steadytext.apreload_models()  # start workers before the first request
    yield
    await steadytext.aclose()


app = FastAPI(lifespan=lifespan)


class GenerateIn(BaseModel):
    prompt: str
    seed: int = 42
    max_new_tokens: int = Field(default=128, ge=1, le=2048)


@app.post("/generate")
async def generate(body: GenerateIn) -> dict[str, object]:
    try:
        result = await steadytext.default_client().generate(
            body.prompt, seed=body.seed, max_new_tokens=body.max_new_tokens
        )
    except steadytext.InvalidRequestError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return {"text": result.text, "fallback": result.fallback, "finish_reason": result.finish_reason}


@app.post("/generate/stream")
async def generate_stream(body: GenerateIn) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        yield f"data: {json.dumps({'status': 'starting'})}\n\n"
        async for token in steadytext.agenerate_iter(body.prompt, seed=body.seed, max_new_tokens=body.max_new_tokens):
            yield f"data: {json.dumps({'token': token})}\n\n"
        yield f"data: {json.dumps({'status': 'complete'})}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
