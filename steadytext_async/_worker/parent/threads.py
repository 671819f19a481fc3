"""A pool's decode-thread budget: how many threads its decoding workers may use now, and the host tokens behind them.

- Without a :class:`~steadytext_async._worker.parent.budget.HostBudget` the pool uses all its ``threads`` while it has
  active requests.
- With one, every decode thread also needs one host token. The pool holds tokens only while it has active
  requests; it takes spare tokens only while no other pool waits, and a watcher hands the extra back once another
  pool starts waiting (or takes tokens freed meanwhile, for a batch that started short of threads).

- A pool with nothing running that finds every host token taken for ``wait_limit`` seconds warns, naming the
  holders; when they are all stopped (a Ctrl-Z'd run holds its tokens but no core), or after ``hard_limit``
  seconds in any case, it runs one request on one thread without a token rather than wait forever.

The pool (``_worker/parent/pool.py``) splits the total among its decoding workers with :func:`split`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator

from .budget import HostBudget, Token

__all__ = ["ThreadBudget", "split"]

logger = logging.getLogger("steadytext_async")

WAIT_LIMIT = 10.0  # seconds without any host token before the holders are named (and, if stopped, bypassed)
HARD_LIMIT = 120.0  # seconds after which one thread runs without a token whoever holds them
_GAP = 1.0  # a pause this long between failed attempts starts a new wait


def split(total: int, k: int) -> list[int]:
    """``total`` threads as ``k`` near-equal shares, larger ones first."""
    base, extra = divmod(total, k)
    return [base + (1 if i < extra else 0) for i in range(k)]


class ThreadBudget:
    def __init__(
        self, threads: int, host: HostBudget | None, *, wait_limit: float = WAIT_LIMIT, hard_limit: float = HARD_LIMIT
    ) -> None:
        self.threads = threads
        self.host = host
        self.tokens: list[Token] = []
        self.wait_limit, self.hard_limit = wait_limit, hard_limit
        self.tokenless = 0  # times a request ran on one thread without a token (every holder stopped or too slow)
        self._closed = False
        self._watcher: asyncio.Task[None] | None = None
        self._starved: tuple[float, float] | None = None  # (first, last) failed attempt of the current wait
        self._named = False  # the holders of the current wait were named in a warning

    @property
    def shared(self) -> bool:
        """True when threads come from a host budget shared with other pools."""
        return self.host is not None

    def total_for(self, active: int, newcomer: bool) -> int:
        """Threads the pool may use now; takes or returns host tokens to match (returns happen later)."""
        if self.host is None or active == 0:
            return self.threads if active else 0
        want = min(self.threads, max(active, len(self.tokens)))
        if not self.host.others_waiting():  # take spare cores while nobody else waits
            while len(self.tokens) < self.threads:
                token = self.host.try_acquire()
                if token is None:
                    break
                self.tokens.append(token)
            want = min(self.threads, len(self.tokens))
        elif not newcomer:
            want = active  # one thread each; the surplus goes back to the host
        return max(active, want)

    def has_token(self, active: int) -> bool:
        """True when the pool holds (or just took) a host token for one more decoding worker, or, with nothing
        running, after a bounded wait (see the module docstring) it may run one thread without one."""
        if self.host is None or len(self.tokens) > active:
            return True
        token = self.host.try_acquire()
        if token is not None:
            self.tokens.append(token)
            self._starved = None
            return True
        return active == 0 and not self.tokens and self._starved_too_long()

    def _starved_too_long(self) -> bool:
        assert self.host is not None
        now = time.monotonic()
        if self._starved is None or now - self._starved[1] > _GAP:
            self._starved, self._named = (now, now), False
            return False
        first = self._starved[0]
        self._starved = (first, now)
        if now - first < self.wait_limit:
            return False
        holders = self.host.holders()
        bypass = now - first >= self.hard_limit or all(h.stopped for h in holders)
        if not self._named or bypass:
            self._named = True
            names = "; ".join(map(str, holders)) or "unknown processes"
            action = "running one request on one thread without a token" if bypass else "still waiting"
            logger.warning(
                "every host decode thread has been taken for %.0f s (held by %s); %s", now - first, names, action
            )
        if bypass:
            self._starved = None
            self.tokenless += 1
        return bypass

    def return_tokens(self, keep: int) -> None:
        """Give back host tokens beyond ``keep`` (the threads in use once shrinks are acknowledged)."""
        assert self.host is not None
        while len(self.tokens) > keep:
            self.host.release(self.tokens.pop())

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Announce to the other pools of the host that this one waits for a token."""
        assert self.host is not None
        with self.host.waiting():
            yield

    def _unbalanced(self, active: int) -> bool:
        """More tokens than decoding workers (a surplus to hand back when asked), or fewer than ``threads`` (a
        running batch that could use cores another pool has since freed)."""
        return active > 0 and (len(self.tokens) > active or len(self.tokens) < self.threads)

    def watch(self, active: Callable[[], int], rebalance: Callable[[], Awaitable[None]]) -> None:
        """While the pool's tokens do not match its work, every 50 ms: ``rebalance()`` to hand a surplus back once
        another pool waits, or to take freed tokens while nobody waits. A batch keeps its worker (joining it
        needs no new token), so without this a batch that started on one thread would stay on one thread."""
        if self.host is not None and self._watcher is None and self._unbalanced(active()):
            self._watcher = asyncio.create_task(self._watch(active, rebalance))

    async def _watch(self, active: Callable[[], int], rebalance: Callable[[], Awaitable[None]]) -> None:
        assert self.host is not None
        try:
            while not self._closed and self._unbalanced(active()):
                await asyncio.sleep(0.05)
                waiting = self.host.others_waiting()
                if (len(self.tokens) > active() and waiting) or (len(self.tokens) < self.threads and not waiting):
                    await rebalance()
        finally:
            self._watcher = None

    def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()

    def forget_after_fork(self) -> None:
        """In a forked child: the tokens are the parent's; drop them without releasing them."""
        self._closed = True
        if self.host is not None:
            for token in self.tokens:
                self.host.forget(token)
        self.tokens = []
