"""Turn a stream of token bytes into text pieces: whole UTF-8 characters only, stop string cut out.

Pure Python with no model dependency, so the worker and any provider share it and tests cover it directly.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = ["Piece", "TextAssembler"]


@dataclass(slots=True)
class Piece:
    """Text released to the caller, with the token positions (indices into the generated tokens) it covers."""

    text: str
    token_indices: list[int] = field(default_factory=list)


class TextAssembler:
    """Feed token bytes one token at a time; get back text pieces that are safe to emit.

    - bytes of a character split across tokens are held until the character is complete;
    - with a stop string, text that might be the start of the stop string is held back, and once the stop
      string appears, everything from it on is dropped and :attr:`stopped` becomes True.
    """

    def __init__(self, stop: str | None = None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = stop or None
        self._held = ""  # decoded but not yet released (possible stop-string prefix)
        self._held_tokens: list[int] = []
        self._pending_tokens: list[int] = []  # tokens whose bytes are not fully decoded yet
        self.stopped = False
        self.text = ""  # everything released so far
        self.fed = 0  # tokens fed by pieces()

    def feed(self, index: int, data: bytes) -> Piece | None:
        """Add the bytes of generated token number ``index``; return a piece to emit, if any."""
        if self.stopped:
            return None
        self._pending_tokens.append(index)
        decoded = self._decoder.decode(data)
        if not decoded:
            return None
        self._held += decoded
        self._held_tokens.extend(self._pending_tokens)
        self._pending_tokens = []
        return self._release(final=False)

    def pieces(self, tokens: Iterable[bytes]) -> Iterator[Piece]:
        """Feed a whole token sequence (up to the stop string) and yield the pieces that carry text."""
        for index, data in enumerate(tokens):
            self.fed += 1
            piece = self.feed(index, data)
            if piece is not None and piece.text:
                yield piece
            if self.stopped:
                return
        piece = self.finish()
        if piece is not None and piece.text:
            yield piece

    def finish(self) -> Piece | None:
        """End of generation: flush whatever is held (an incomplete trailing character becomes U+FFFD)."""
        if self.stopped:
            return None
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._held += tail
        self._held_tokens.extend(self._pending_tokens)
        self._pending_tokens = []
        return self._release(final=True)

    def _release(self, *, final: bool) -> Piece | None:
        stop = self._stop
        if stop is not None:
            at = self._held.find(stop)
            if at >= 0:
                self.stopped = True
                return self._emit(self._held[:at])
            if not final:
                keep = _longest_prefix_suffix(self._held, stop)
                if keep:
                    out = self._held[:-keep]
                    if not out:
                        return None
                    piece = Piece(out, self._held_tokens)
                    self._held = self._held[-keep:]
                    self._held_tokens = []
                    self.text += out
                    return piece
        return self._emit(self._held)

    def _emit(self, out: str) -> Piece | None:
        tokens = self._held_tokens
        self._held = ""
        self._held_tokens = []
        if not out and not tokens:
            return None
        self.text += out
        return Piece(out, tokens)


def _longest_prefix_suffix(text: str, stop: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
