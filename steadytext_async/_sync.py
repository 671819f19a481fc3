"""SteadyText: the blocking twin of :class:`AsyncSteadyText`, a thin shim over the same implementation.

Each call hands the async implementation to the engine's loop thread and waits (a hot cache hit is answered on the
calling thread), so it works in plain scripts, from many threads at once, and from code already running inside an
event loop (sync FastAPI handlers, Jupyter).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Any, Unpack

from ._client import AsyncSteadyText
from ._config import Settings
from ._models import Chunk, Fingerprint, GenerationResult, ModelSpec
from ._options import ModelOptions, RequestOptions
from ._replay import ReplayReport
from ._validate import build_request

__all__ = ["SteadyText"]


class SteadyText:
    """Blocking client. ``with SteadyText() as client: client.generate("...")``."""

    def __init__(self, settings: Settings | None = None, *, client: AsyncSteadyText | None = None, **overrides: Any):
        self._async = client if client is not None else AsyncSteadyText(settings, **overrides)

    @property
    def async_client(self) -> AsyncSteadyText:
        return self._async

    def __enter__(self) -> SteadyText:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._async.close_blocking()

    def generate(self, prompt: str | None = None, **kwargs: Unpack[RequestOptions]) -> GenerationResult:
        return self._async.run_request_blocking(build_request(prompt, **kwargs))

    def stream(self, prompt: str | None = None, **kwargs: Unpack[RequestOptions]) -> Iterator[Chunk | GenerationResult]:
        yield from self._async.iterate_request_blocking(build_request(prompt, **kwargs))

    def preload(self, **kwargs: Unpack[ModelOptions]) -> ModelSpec:
        request = build_request("", **kwargs)
        return self._async.preload_blocking(request)

    def replay(
        self,
        recording: GenerationResult | Fingerprint | str | dict[str, Any],
        *,
        allow_remote: bool = False,
        allow_download: bool = False,
    ) -> ReplayReport:
        """Blocking :meth:`AsyncSteadyText.replay`."""
        return self._async.replay_blocking(recording, allow_remote=allow_remote, allow_download=allow_download)

    def worker_pids(self) -> list[int]:
        return self._async.worker_pids()
