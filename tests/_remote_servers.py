"""Loopback servers for the remote-provider tests and benchmark.

- :class:`ScriptedServer`: a tiny HTTP/1.1 server on its own thread and event loop. Each request takes the next
  action from a script (answer JSON, stream SSE, fail with a status, reset the connection, stall, send garbage);
  with an empty script it answers instantly with a fixed completion. TCP_NODELAY is set on every connection.
- :class:`LlamaServer`: llama-cpp-python's OpenAI-compatible server as a subprocess on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chat_doc(text: str = "Hello", finish: str = "stop", model: str = "m") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def chat_events(pieces: list[str], finish: str | None = "stop", done: bool = True) -> list[str]:
    """SSE ``data`` payloads of a chat stream: a role chunk, one chunk per piece, the finish chunk, usage, [DONE]."""
    out = [json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})]
    out += [json.dumps({"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}) for p in pieces]
    if finish is not None:
        out.append(json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
        out.append(json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(pieces)}}))
    if done:
        out.append("[DONE]")
    return out


@dataclasses.dataclass
class Action:
    """What the server does with one request.

    kind: "json" (status + body), "sse" (events, then end), "reset" (RST the connection before answering),
    "stall" (SSE headers and ``events``, then silence until the client leaves), "raw" (write ``raw`` bytes, close).
    ``body`` may be a function of the request (:class:`Seen`).
    """

    kind: str = "json"
    status: int = 200
    body: Any = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    events: list[str] = dataclasses.field(default_factory=list)
    raw: bytes = b""


@dataclasses.dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}


class ScriptedServer:
    """A scripted HTTP/1.1 server on 127.0.0.1 (its own thread). Use as a context manager."""

    def __init__(self) -> None:
        self.script: deque[Action] = deque()
        self.requests: list[Seen] = []
        self.connections = 0
        self.abandoned = 0  # stalled streams the client closed
        self.default: Action | Callable[[Seen], Action] = Action("json", body=chat_doc("Hello"))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="scripted-server", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> Self:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        fut.result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def reset(self, *actions: Action) -> None:
        self.script = deque(actions)
        self.requests = []
        self.connections = 0
        self.abandoned = 0

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            self._server.close_clients()  # type: ignore[attr-defined]  # 3.13+
        for task in list(self._tasks):
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
                try:
                    raw = await reader.readexactly(int(headers.get("content-length", "0")))
                except asyncio.IncompleteReadError:  # the client gave up (cancelled) before sending its body
                    return
                seen = Seen(method, path, headers, json.loads(raw) if raw else None)
                self.requests.append(seen)
                if self.script:
                    action = self.script.popleft()
                else:
                    action = self.default(seen) if callable(self.default) else self.default
                if not await self._act(action, seen, reader, writer):
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _act(self, a: Action, seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False: the connection is finished."""
        if a.kind == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if a.kind == "raw":
            writer.write(a.raw)
            await writer.drain()
            return False
        reason = _REASONS.get(a.status, "Error")
        if a.kind == "json":
            value = a.body(seen) if callable(a.body) else a.body
            body = value if isinstance(value, bytes) else json.dumps(value).encode()
            head = f"HTTP/1.1 {a.status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in a.headers.items())
            writer.write(head.encode() + b"\r\n" + body)
            await writer.drain()
            return True
        head = f"HTTP/1.1 {a.status} OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        writer.write(head.encode())
        for data in a.events:
            payload = data.encode() if data.startswith((":", "event:", "data:")) else f"data: {data}\n\n".encode()
            writer.write(b"%x\r\n%s\r\n" % (len(payload), payload))
            await writer.drain()
        if a.kind == "stall":
            with contextlib.suppress(ConnectionError):
                await asyncio.wait_for(reader.read(), 3600)  # b"": the client closed the connection
            self.abandoned += 1
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


class LlamaServer:
    """``python -m llama_cpp.server`` on 127.0.0.1 (one thread, small context), started and stopped here."""

    def __init__(self, model_path: str | Path, log_path: Path, *, start_timeout: float = 180.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path),
            "--model_alias",
            "gemma",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_threads",
            "1",
            "--n_threads_batch",
            "1",
            "--n_ctx",
            "512",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        t_end = time.monotonic() + self.start_timeout
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"llama server exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"llama server did not start in {self.start_timeout}s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


INSTANT_JSON = Action("json", body=chat_doc("Hello world"))
INSTANT_SSE = Action("sse", events=chat_events(["Hello", " world"]))


def instant(seen: Seen) -> Action:
    """An instant answer in the shape the request asked for (SSE when ``stream`` is true)."""
    return INSTANT_SSE if isinstance(seen.body, dict) and seen.body.get("stream") else INSTANT_JSON


if __name__ == "__main__":  # instant-answer server for the benchmark: prints its port, serves until stdin closes
    with ScriptedServer() as srv:
        srv.default = instant
        print(srv.port, flush=True)
        sys.stdin.read()
