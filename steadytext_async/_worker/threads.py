"""A pool's decode-thread budget: how many threads its decoding workers may use now, and the host tokens behind them.

- Without a :class:`~steadytext_async._engine.budget.HostBudget` the pool uses all its ``threads`` while it has
  active requests.
- With one, every decode thread also needs one host token. The pool holds tokens only while it has active
  requests; it takes spare tokens only while no other pool waits, and a watcher hands the extra back once another
  pool starts waiting (or takes tokens freed meanwhile, for a batch that started short of threads).

The pool (``_worker/pool.py``) splits the total among its decoding workers with :func:`split`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

from .._engine.budget import HostBudget, Token

__all__ = ["ThreadBudget", "split"]


def split(total: int, k: int) -> list[int]:
    """``total`` threads as ``k`` near-equal shares, larger ones first."""
    base, extra = divmod(total, k)
    return [base + (1 if i < extra else 0) for i in range(k)]


class ThreadBudget:
    def __init__(self, threads: int, host: HostBudget | None) -> None:
        self.threads = threads
        self.host = host
        self.tokens: list[Token] = []
        self._closed = False
        self._watcher: asyncio.Task[None] | None = None

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
        """True when the pool holds (or just took) a host token for one more decoding worker."""
        if self.host is None or len(self.tokens) > active:
            return True
        token = self.host.try_acquire()
        if token is None:
            return False
        self.tokens.append(token)
        return True

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
