"""This process and its forks: the one place that knows about ``fork``.

A forked child (``multiprocessing``'s default on Linux, ``gunicorn --preload``, celery's prefork pool) copies the
parent's memory but none of its threads, so nothing that a thread serves may be used in the child: the engine's
event loop thread, worker pipes, aiosqlite and redis connections, locks another thread may have held. Two rules, both
through this module:

- **Made on first use, owned by its process.** An object made lazily (a client's router and cache, a local
  provider's pool, the engine) remembers the :class:`Lifetime` it was made in. In a forked child
  :meth:`Lifetime.here` is False, and the child makes its own. The parent's copy is neither used nor closed there.
- **Reset before the child runs.** Module-level state that must be fresh before any code of the child runs
  (the default clients, the engine, the result caches, the host budget's announcements) registers a reset with
  :func:`on_fork`. So does a guard the parent holds across a fork (no fork while a thread is inside SQLite or
  holds the budget's probe lock), with ``before`` and ``parent``.

One ``os.register_at_fork`` runs every registered hook. ``before`` hooks run by ascending ``order`` (then in
registration order), and ``parent`` and ``child`` hooks in reverse. So the first one taken is released last. A hook
that raises is logged, and the others still run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

__all__ = ["Lifetime", "current", "on_fork"]

logger = logging.getLogger("steadytext_async")

Hook = Callable[[], object]


class Lifetime:
    """One process's lifetime. A forked child starts a new one."""

    __slots__ = ("pid",)

    def __init__(self) -> None:
        self.pid = os.getpid()

    @property
    def here(self) -> bool:
        """True in the process this lifetime belongs to, False in a child forked from it."""
        return self is _current

    def __repr__(self) -> str:
        return f"Lifetime(pid={self.pid}{'' if self.here else ', forked away'})"


_current = Lifetime()
Hooks = tuple[Hook | None, Hook | None, Hook | None]  # (before, parent, child)
_hooks: list[tuple[int, Hooks]] = []  # (order, hooks), in registration order


def current() -> Lifetime:
    """This process's lifetime."""
    return _current


def on_fork(
    *, child: Hook | None = None, before: Hook | None = None, parent: Hook | None = None, order: int = 0
) -> None:
    """Run ``before`` in the forking thread before each fork, then ``parent`` in the parent and ``child`` in the
    child, before anything else of theirs runs. A lower ``order`` runs its ``before`` earlier (a guard that may
    wait goes first, so that it waits before the others take theirs)."""
    _hooks.append((order, (before, parent, child)))


def _ordered() -> list[Hooks]:
    return [hooks for _, hooks in sorted(_hooks, key=lambda item: item[0])]  # stable: registration order within


def _run(which: int, order: list[Hooks]) -> None:
    for hooks in order:
        hook = hooks[which]
        if hook is not None:
            try:
                hook()
            except Exception:
                logger.exception("fork hook %r failed", hook)


def _before() -> None:
    _run(0, _ordered())


def _in_parent() -> None:
    _run(1, _ordered()[::-1])


def _in_child() -> None:
    global _current
    _current = Lifetime()
    _run(2, _ordered()[::-1])


os.register_at_fork(before=_before, after_in_parent=_in_parent, after_in_child=_in_child)
