"""Which worker probably holds a request's prompt prefix (see prefix.py): the pool's routing hint.

The parent never tokenizes, so it remembers what it sent: per worker, digests of the leading text of recent
requests (the raw prompt, or the conversation's messages) at every :data:`STEP` characters. A request's score for a
worker is how many leading steps of its text that worker has seen. Only a hint: the worker may have evicted the
state, and reuse never changes the output bytes, so a wrong guess costs time only.
"""

from __future__ import annotations

import collections
import hashlib
import json
import weakref
from collections.abc import Sequence

from ..protocol import DoneFrame, GenParams

__all__ = ["Affinity", "anchors"]

STEP = 512  # characters between digests (about 128 tokens: finer than the n_batch grid)
MEMORY = 4096  # digests remembered per worker


def anchors(params: GenParams) -> list[bytes]:
    """Digests of the request's text cut at every STEP characters (each covers everything before its cut)."""
    if params.messages is not None:
        text = "".join(json.dumps(m, sort_keys=True) for m in params.messages)
    else:
        text = params.prompt
    h = hashlib.blake2b(digest_size=16)
    out = []
    for start in range(0, len(text) - STEP + 1, STEP):
        h.update(text[start : start + STEP].encode("utf-8", "surrogatepass"))
        out.append(h.copy().digest())
    return out


class Affinity:
    def __init__(self) -> None:
        self._seen: weakref.WeakKeyDictionary[object, collections.OrderedDict[bytes, None]] = (
            weakref.WeakKeyDictionary()
        )
        self._held: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()
        self.hits = 0  # generations that restored a kept prefix
        self.reused = 0  # prompt tokens they did not evaluate

    def score(self, worker: object, keys: Sequence[bytes]) -> int:
        seen = self._seen.get(worker)
        if not seen:
            return 0
        return next((i + 1 for i in range(len(keys) - 1, -1, -1) if keys[i] in seen), 0)

    def sent(self, worker: object, keys: Sequence[bytes]) -> None:
        seen = self._seen.setdefault(worker, collections.OrderedDict())
        for key in keys:
            seen[key] = None
            seen.move_to_end(key)
        while len(seen) > MEMORY:
            seen.popitem(last=False)

    def done(self, worker: object, msg: DoneFrame) -> None:
        cached = msg.usage.prompt_tokens_cached
        self.hits += cached > 0
        self.reused += cached
        self._held[worker] = msg.prefix_bytes

    def held(self, workers: Sequence[object]) -> int:
        """Bytes of prefix state the given workers reported keeping after their last generation."""
        return sum(self._held.get(w, 0) for w in workers)
