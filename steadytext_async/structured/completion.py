"""The shortest completion: the fewest tokens that take a matcher from its current state to a complete output.

llguidance exposes no distance-to-accept, so it is searched for on a scratch copy of the matcher, byte by byte:

1. stop when the state is accepting (an end token is allowed);
2. take the forced bytes (``compute_ff_bytes``: keys of required fields, ``rue`` after ``t``, separators);
3. otherwise probe single-byte tokens in a fixed order -- ``"``, ``a``, the closers ``}`` ``]`` ``,``, then the
   shortest values (``0``..``9`` ``-`` ``[`` ``{`` ``t`` ``n`` ``f``), then letters and other printable ASCII --
   and take the one that gets furthest (see :meth:`Completer._step`).

So a string is closed as soon as its constraints allow (padded with ``a`` or the first allowed character when it
has a ``minLength`` or a pattern), a missing required field gets ``0``/``""``/``[]``/``{}``/``true``... whatever
its schema admits first, an integer with ``minimum: 5`` gets ``5`` rather than ``10``, and containers are closed. The
bytes found are then tokenized with the model's tokenizer (``"}`` is one token, not two) and whichever token
sequence is shorter and accepted is the completion. The walk is deterministic: same state, same completion.

It is a heuristic, not an exhaustive search (that would mean a mask per node of a tree with hundreds of branches):
it finds the shortest completion for the shapes JSON schemas, regexes and choices usually take, and always finds
*a* completion when one exists within ``MAX_TOKENS``.
"""

from __future__ import annotations

import numpy as np
from llguidance import LLMatcher, LLTokenizer

__all__ = ["MAX_TOKENS", "Budget", "Completer"]

MAX_TOKENS = 256  # give up (no steering) on completions longer than this
_TRIES = 8  # probes looked at after the first that moves

_PROBE_ORDER = (
    b'"a}], '  # "a" (never JSON structure) pads strings and patterns before "}" "]" "," could
    + b"0123456789-[{tnf"
    + b"bcdeghijklmopqrsuvwxyz"
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
        self._closers = [t for t, b in zip(probes, _PROBE_ORDER, strict=False) if b in b'"}],']

    def _forced(self, m: LLMatcher) -> list[int]:
        """Consume the bytes the state forces (the trailing space of ``": "`` included) and return their tokens."""
        forced = m.compute_ff_bytes()
        if not forced:
            return []
        ff = self._tokenizer.tokenize_bytes(forced)
        if m.consume_tokens(ff):
            return ff
        ff = m.compute_ff_tokens()
        return ff if ff and m.consume_tokens(ff) else []

    def _allows_closer(self, mask: bytes) -> bool:
        return any(mask[c >> 3] >> (c & 7) & 1 for c in self._closers)

    def _step(self, m: LLMatcher) -> list[int] | None:
        """Consume the next choice (one token plus the bytes it forces); the tokens taken, or None: no way on.

        A probe "moves" when it forces bytes or changes the state's token mask (one more letter of ``[a-z]+`` or
        one more character of a plain string does neither). Allowed probes are tried in order; the choice is the
        first that completes the output by itself (``5`` for an integer from 5 to 20, not ``2`` that forces
        ``0``), else the one that completes it forcing the fewest bytes, else the first closer (``"`` ``}`` ``]``
        ``,``) that moves or probe that moves to where a closer is allowed; else the first that moves (looking
        at most ``_TRIES`` probes further); else the first allowed probe (padding up to a ``minLength``); else
        the lowest allowed token id.
        """
        mask = m.compute_bitmask()
        first: int | None = None
        moving: int | None = None
        best: list[int] | None = None  # the shortest choice found that completes the output
        tries = 0
        for probe in self._probes:
            if not mask[probe >> 3] >> (probe & 7) & 1:
                continue
            if first is None:
                first = probe
            m.consume_token(probe)
            ff = self._forced(m)
            after = m.compute_bitmask()
            moved = bool(ff) or after != mask
            if m.is_accepting():
                if not ff:
                    return [probe]
                if best is None or len(ff) < len(best) - 1:
                    best = [probe, *ff]
            elif best is None and moved and (probe in self._closers or self._allows_closer(after)):
                return [probe, *ff]
            if moving is None and moved:
                moving = probe
            m.rollback(1 + len(ff))
            tries += moving is not None or best is not None
            if tries > _TRIES:
                break
        if best is not None:
            return best if m.consume_tokens(best) else None
        choice = moving if moving is not None else first
        if choice is None:
            allowed = np.flatnonzero(np.unpackbits(np.frombuffer(mask, np.uint8), bitorder="little"))
            allowed = allowed[~np.isin(allowed, self._ends)]
            if not allowed.size:
                return None
            choice = int(allowed[0])
        if not m.consume_token(choice):
            return None
        return [choice, *self._forced(m)]

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
    the budget, every ``period`` tokens before that. Near the end means ``remaining <= 2 * known + slack``, or a
    complete output (known == 0): then every token is checked (cheaply: it usually keeps the output complete).
    """

    def __init__(self, completer: Completer, plan: list[int] | None, *, slack: int = 16, period: int = 8) -> None:
        self._completer = completer
        self._plan = None if plan is None else list(plan)
        self._exact = plan is not None  # the plan is the search's result for this state, not a leftover
        self._next: tuple[int, list[int], bool] | None = None  # (token, completion after it, exact)
        self._known = 0 if plan is None else len(plan)
        self._stale = 0
        self._failed = False  # the last search found nothing
        self._slack = slack
        self._period = period

    def near(self, matcher: LLMatcher, remaining: int) -> list[int] | None:
        """The shortest completion from ``matcher``'s state when ``remaining`` is close to it, else None.

        A search that finds nothing is not repeated for ``period`` tokens (no steering meanwhile)."""
        plan = self._plan
        # A complete output (an empty plan) is always "near": one token can start something whose shortest
        # completion is far longer (a tool call after plain text may begin), and that token must fit too.
        near = remaining <= 2 * self._known + self._slack or plan == []
        if plan is None:
            due = self._stale >= self._period or (near and not self._failed)
        else:
            due = near and not self._exact and len(plan) >= remaining - 1
        if due:
            found = self._completer.walk(matcher)
            self._failed = found is None
            if found is not None:
                self._set(found, exact=True)
            else:
                self._stale = 0
            near = remaining <= 2 * self._known + self._slack or self._plan == []
        return self._plan if near else None

    def fits(self, matcher: LLMatcher, token: int, budget: int) -> bool:
        """Whether some completion after ``token`` takes at most ``budget`` tokens (remembered for advance)."""
        after = matcher.deep_copy()
        if not after.consume_token(token):
            return False
        reused = _reuse(after, self._plan)
        if reused is not None and len(reused) <= budget:
            self._next = (token, reused, False)
            return True
        plan = self._completer.walk(after)
        if plan is None or len(plan) > budget:
            return False
        self._next = (token, plan, True)
        return True

    def advanced(self, matcher: LLMatcher, token: int) -> None:
        """``matcher`` has just consumed ``token``."""
        self._stale += 1
        plan, self._plan, nxt, self._next = self._plan, None, self._next, None
        if plan and plan[0] == token:
            self._set(plan[1:], exact=self._exact)
        elif nxt is not None and nxt[0] == token:
            self._set(nxt[1], exact=nxt[2])
        else:
            self._set(_reuse(matcher, plan), exact=False)

    def _set(self, plan: list[int] | None, *, exact: bool) -> None:
        self._plan = plan
        self._exact = exact
        if plan is not None:
            self._known = len(plan)
            self._stale = 0
            self._failed = False


def _reuse(matcher: LLMatcher, plan: list[int] | None) -> list[int] | None:
    """The old completion without its first token, or whole, if it still completes from ``matcher``'s state.

    The first covers a token that did the plan's first token's job (``5`` where the plan had ``0``)."""
    if plan is None:
        return None
    if plan and _completes(matcher, plan[1:]):
        return plan[1:]
    return plan if _completes(matcher, plan) else None


def _completes(matcher: LLMatcher, tokens: list[int]) -> bool:
    scratch = matcher.deep_copy()
    return scratch.consume_tokens(tokens) and scratch.is_accepting()
