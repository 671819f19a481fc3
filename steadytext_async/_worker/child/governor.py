"""Choose how many of its granted threads a worker actually decodes with.

llama.cpp built without OpenMP synchronises its threads with spinning barriers: when another process competes for
the cores, a 2-thread decode can become 5-20x slower than a 1-thread one. Output bytes do not depend on the thread
count, so the worker may pick whichever count is fastest right now. The governor keeps an exponentially weighted
per-token time for each candidate count, uses the fastest, and re-probes the others now and then (backing off while
they keep losing), so a quiet machine gets the full share and a busy one degrades gracefully.
"""

from __future__ import annotations

__all__ = ["ThreadGovernor"]


class ThreadGovernor:
    ALPHA = 0.3  # weight of a new sample in the moving average
    PROBE_LEN = 3  # decode steps per probe
    MIN_INTERVAL = 32  # steps between probes after a probe found a better count
    MAX_INTERVAL = 512

    def __init__(self) -> None:
        self.ewma: dict[int, float] = {}
        self._interval = self.MIN_INTERVAL
        self._since_probe = 0
        self._probing: int | None = None
        self._probe_left = 0
        self._samples: list[float] = []
        self._contest = False  # whether the probe running tries a measured count against the best

    @staticmethod
    def candidates(share: int) -> list[int]:
        """Thread counts worth trying with ``share`` threads granted: the share, half of it, and one."""
        return sorted({max(1, share), max(1, share // 2), 1}, reverse=True)

    def best(self, share: int) -> int:
        """The fastest count known; the full share while it has no estimate (never measured, or forgotten after
        idleness), as :meth:`choose` measures it first. A prompt after idleness used to go to whichever other count
        still had an estimate: one thread, 0.24 instead of 0.125 s for a 42-token prompt, 7 % of a 96-token
        request."""
        cands = self.candidates(share)
        if cands[0] not in self.ewma:
            return cands[0]
        return -min((self.ewma[n], -n) for n in cands if n in self.ewma)[1]

    def choose(self, share: int) -> int:
        """Thread count for the next decode step (never more than ``share``)."""
        cands = self.candidates(share)
        if self._probing is not None and self._probing in cands and self._probe_left > 0:
            return self._probing
        self._probing = None
        for n in cands:  # measure every candidate first, largest first
            if n not in self.ewma:
                self._start_probe(n)
                return n
        self._since_probe += 1
        best = self.best(share)
        if len(cands) > 1 and self._since_probe >= self._interval:
            others = [n for n in cands if n != best]
            self._start_probe(others[self._since_probe % len(others)] if len(others) > 1 else others[0])
            assert self._probing is not None
            return self._probing
        return best

    def forget(self, n: int) -> None:
        """Drop the estimate for ``n`` threads (stale: measured before the worker went idle), so that the next
        step measures it afresh; the other counts keep theirs."""
        self.ewma.pop(n, None)
        if self._probing == n:
            self._probing = None

    def record(self, n: int, seconds: float) -> None:
        """Report how long one decode step with ``n`` threads took."""
        if self._probing == n:  # a probe measures afresh: its median replaces the old estimate
            self._samples.append(seconds)
            self._probe_left -= 1
            if self._probe_left <= 0:
                self.ewma[n] = sorted(self._samples)[len(self._samples) // 2]
                self._finish_probe(n)
            return
        old = self.ewma.get(n)
        self.ewma[n] = seconds if old is None else (1 - self.ALPHA) * old + self.ALPHA * seconds

    def _start_probe(self, n: int) -> None:
        # A count with no estimate (never measured, or forgotten after idleness) is measured, not tried against the
        # best: that neither restarts the count to the next probe nor, when it comes out fastest, shortens the
        # interval. The full share forgotten at every request's start used to win that way each time, so a lone
        # request spent 3 of every 96 steps on one thread (about 2.5 % of its time) instead of 3 in 512.
        self._contest = n in self.ewma
        self._probing = n
        self._probe_left = self.PROBE_LEN
        self._samples = []
        if self._contest:
            self._since_probe = 0

    def _finish_probe(self, n: int) -> None:
        self._probing = None
        if not self._contest:
            return
        won = all(self.ewma[n] <= v for v in self.ewma.values())
        self._interval = self.MIN_INTERVAL if won else min(self._interval * 2, self.MAX_INTERVAL)
