"""The shortest completion: the fewest tokens that take a matcher from its current state to a complete output.

llguidance exposes no distance-to-accept, so it is searched for on a scratch copy of the matcher, byte by byte:

1. stop when the state is accepting (an end token is allowed);
2. take the forced bytes (``compute_ff_tokens``: keys of required fields, ``rue`` after ``t``, separators);
3. otherwise probe single-byte tokens in a fixed order -- closers first (``"`` ``}`` ``]`` ``,``), then the
   shortest values (``0``..``9`` ``-`` ``[`` ``{`` ``t`` ``n`` ``f``), then letters and other printable ASCII -- and
   take the first one that *can end what it starts*: after it (and its forced bytes) the output is complete or a
   closer is allowed. Failing that, the first allowed probe; failing that, the lowest allowed token id.

So a string is closed as soon as its constraints allow (padded with the first allowed character when it has a
``minLength`` or a pattern), a missing required field gets ``0``/``""``/``[]``/``{}``/``true``... whatever its
schema admits first, an integer with ``minimum: 5`` gets ``5`` rather than ``10``, and containers are closed. The
bytes found are then tokenized with the model's tokenizer (``"}`` is one token, not two) and whichever token
sequence is shorter and accepted is the completion. The walk is deterministic: same state, same completion.

It is a heuristic, not an exhaustive search (that would mean a mask per node of a tree with hundreds of branches):
it finds the shortest completion for the shapes JSON schemas, regexes and choices usually take, and always finds
*a* completion when one exists within ``MAX_BYTES``.
"""

from __future__ import annotations

import numpy as np
from llguidance import LLMatcher, LLTokenizer

__all__ = ["MAX_TOKENS", "Budget", "Completer"]

MAX_TOKENS = 512  # give up (no steering) on completions longer than this

_PROBE_ORDER = (
    b'"}], '
    + b"0123456789-[{tnf"
    + b"abcdeghijklmopqrsuvwxyz"
    + b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    + b".:_+/@#$%&*()<>=?!;'`~^|\\\n\t"
)


class Completer:
    """Shortest-completion search for matchers built on one tokenizer (one per :class:`MatcherFactory`)."""

    def __init__(self, tokenizer: LLTokenizer, end_tokens: list[int]) -> None:
        self._tokenizer = tokenizer
        self._ends = np.asarray(end_tokens, dtype=np.int64)
        probes: list[int] = []
        for byte in _PROBE_ORDER:
            ids = tokenizer.tokenize_bytes(bytes([byte]))
            if len(ids) == 1 and tokenizer.decode_bytes(ids) == bytes([byte]):
                probes.append(ids[0])
        self._probes = probes

    @staticmethod
    def _forced(m: LLMatcher) -> list[int]:
        ff = m.compute_ff_tokens()
        if ff and not m.consume_tokens(ff):
            return []
        return ff

    def _step(self, m: LLMatcher) -> list[int] | None:
        """Consume the next choice (one token plus the bytes it forces); the tokens taken, or None: no way on.

        The choice is the first allowed probe that completes the output or changes the state's token mask (a
        probe that leaves the mask as it was -- one more letter of ``[a-z]+``, one more digit -- goes nowhere);
        failing that the first allowed probe (padding, e.g. up to a ``minLength``), failing that the lowest
        allowed token id.
        """
        mask = m.compute_bitmask()
        first: int | None = None
        for probe in self._probes:
            if not mask[probe >> 3] >> (probe & 7) & 1:
                continue
            m.consume_token(probe)
            ff = self._forced(m)
            if m.is_accepting() or m.compute_bitmask() != mask:
                return [probe, *ff]
            m.rollback(1 + len(ff))
            if first is None:
                first = probe
        if first is None:
            allowed = np.flatnonzero(np.unpackbits(np.frombuffer(mask, np.uint8), bitorder="little"))
            allowed = allowed[~np.isin(allowed, self._ends)]
            if not allowed.size:
                return None
            first = int(allowed[0])
        if not m.consume_token(first):
            return None
        return [first, *self._forced(m)]

    def walk(self, matcher: LLMatcher) -> list[int] | None:
        """The token ids of the shortest completion found from ``matcher``'s state (``[]`` when it is complete),
        or None when there is none within ``MAX_TOKENS``. ``matcher`` is not changed."""
        if matcher.is_error():
            return None
        m = matcher.deep_copy()
        taken = self._forced(m)
        while not m.is_accepting():
            if m.is_stopped() or len(taken) > MAX_TOKENS:
                return None
            step = self._step(m)
            if step is None:
                return None
            taken += step
        if len(taken) > 1:
            merged = self._tokenizer.tokenize_bytes(self._tokenizer.decode_bytes(taken))
            if len(merged) < len(taken):
                check = matcher.deep_copy()
                if check.consume_tokens(merged) and check.is_accepting():
                    return merged
        return taken


class Budget:
    """One generation's budget bookkeeping: a completion known from the current state, kept up to date cheaply.

    A completion found earlier usually still completes the output after the model's next token (one more
    character inside a string), which a consume-and-check on a copy confirms in microseconds; only when it no
    longer does (the model closed the string, opened a field) is it searched for again -- at once near the end of
    the budget, every ``period`` tokens before that. Near the end means ``remaining <= 2 * known + slack``.
    """

    def __init__(self, completer: Completer, plan: list[int] | None, *, slack: int = 16, period: int = 8) -> None:
        self._completer = completer
        self._plan = None if plan is None else list(plan)
        self._exact = plan is not None  # the plan is the search's result for this state, not a leftover
        self._next: tuple[int, list[int]] | None = None
        self._known = 0 if plan is None else len(plan)
        self._stale = 0
        self._slack = slack
        self._period = period

    def near(self, matcher: LLMatcher, remaining: int) -> list[int] | None:
        """The shortest completion from ``matcher``'s state when ``remaining`` is close to it, else None."""
        near = remaining <= 2 * self._known + self._slack
        plan = self._plan
        stale = plan is None and self._stale >= self._period
        if (near and (plan is None or (not self._exact and len(plan) >= remaining - 1))) or stale:
            self._set(self._completer.walk(matcher), exact=True)
            near = remaining <= 2 * self._known + self._slack
        return self._plan if near else None

    def fits(self, matcher: LLMatcher, token: int, budget: int) -> bool:
        """Whether some completion after ``token`` takes at most ``budget`` tokens (remembered for advance)."""
        after = matcher.deep_copy()
        if not after.consume_token(token):
            return False
        if self._plan is not None and len(self._plan) <= budget and _completes(after, self._plan):
            self._next = (token, self._plan)
            return True
        plan = self._completer.walk(after)
        if plan is None or len(plan) > budget:
            return False
        self._next = (token, plan)
        return True

    def advanced(self, matcher: LLMatcher, token: int) -> None:
        """``matcher`` has just consumed ``token``."""
        self._stale += 1
        plan, self._plan, nxt, self._next = self._plan, None, self._next, None
        if plan and plan[0] == token:
            self._set(plan[1:], exact=self._exact)
        elif nxt is not None and nxt[0] == token:
            self._set(nxt[1], exact=nxt[1] is not plan)
        elif plan is not None and _completes(matcher, plan):
            self._set(plan, exact=False)

    def _set(self, plan: list[int] | None, *, exact: bool) -> None:
        self._plan = plan
        self._exact = exact
        if plan is not None:
            self._known = len(plan)
            self._stale = 0


def _completes(matcher: LLMatcher, tokens: list[int]) -> bool:
    scratch = matcher.deep_copy()
    return scratch.consume_tokens(tokens) and scratch.is_accepting()
