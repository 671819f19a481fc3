"""Size limits of the worker pipe (see :mod:`.protocol`), in a module light enough for request validation to import
(no pickle, no message dataclasses)."""

from __future__ import annotations

__all__ = ["MAX_FRAME", "MAX_PROMPT_BYTES"]

MAX_FRAME = 64 << 20
# Prompts are checked against this before any work (``_validate``), leaving room for the rest of a request frame.
MAX_PROMPT_BYTES = MAX_FRAME - (1 << 20)
