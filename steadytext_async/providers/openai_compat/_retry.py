"""Retry policy of a remote call: which failures are retried, how long to wait, when to give up.

Retries (429, 5xx, connect/read errors) happen before the first byte of output reaches the caller. ``Retry-After``
(or ``retry-after-ms``) is honoured up to ``RemoteOptions.max_retry_after``; otherwise the wait is an exponential,
jittered backoff. Attempts and the overall deadline are bounded by :class:`RemoteOptions`.

:class:`RetryPlan` decides for each failed attempt, when its error is built, whether and how long to wait, so the
error's message and attempt count are final from the start; tenacity runs the loop from that plan.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from ..._exceptions import RemoteStatusError
from ..presets import RemoteOptions
from ._errors import retryable

__all__ = ["RetryPlan"]

logger = logging.getLogger("steadytext_async")
T = TypeVar("T")

_sleep: Callable[[float], Any] = asyncio.sleep  # tests replace this to record waits


class RetryPlan:
    """The waits of one call: ``waits[n]`` is the pause after failed attempt ``n`` (None: give up)."""

    def __init__(self, provider: str, options: RemoteOptions, deadline: float) -> None:
        self.provider = provider
        self.options = options
        self.deadline = deadline
        self.waits: dict[int, float | None] = {}

    def decide(self, attempt: int, retry_after: float | None) -> float | None:
        """Called once per retryable failure of ``attempt``: the wait before the next one, or None to give up."""
        o = self.options
        wait: float | None
        if attempt >= o.max_attempts or (retry_after is not None and retry_after > o.max_retry_after):
            wait = None
        else:
            backoff = min(o.max_backoff, o.backoff * 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            wait = retry_after if retry_after is not None else backoff
            if asyncio.get_running_loop().time() + wait >= self.deadline:
                wait = None
        self.waits[attempt] = wait
        return wait

    def _stop(self, state: RetryCallState) -> bool:
        return self.waits.get(state.attempt_number) is None

    def _wait(self, state: RetryCallState) -> float:
        return self.waits.get(state.attempt_number) or 0.0

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        logger.warning(
            "%s: attempt %d/%d failed (%s); retrying in %.2fs",
            self.provider,
            state.attempt_number,
            self.options.max_attempts,
            f"HTTP {exc.status_code}" if isinstance(exc, RemoteStatusError) else type(exc).__name__,
            state.upcoming_sleep,
        )

    async def run(self, attempt: Callable[[int], Awaitable[T]]) -> T:
        """``await attempt(n)`` for n = 1, 2, ... while it raises a retryable error the plan retries."""
        retrying = AsyncRetrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception(retryable),
            before_sleep=self._before_sleep,
            sleep=lambda seconds: _sleep(seconds),
            reraise=True,
        )
        async for trial in retrying:
            with trial:
                return await attempt(trial.retry_state.attempt_number)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
