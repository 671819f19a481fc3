"""A loaded GGUF model with the low-level decode primitives the worker's own decode loop uses.

Only worker processes (and benchmarks/tests of the decode loop) import this: it imports llama_cpp.
"""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["LlamaModel"]


class LlamaModel:
    def __init__(self, path: str, *, n_ctx: int, n_batch: int, n_threads: int, log: bool = False) -> None:
        import llama_cpp

        self.lc = llama_cpp
        self._log_cb: Any = None
        if not log:
            # llama.cpp logs through this callback even with verbose=False; drop everything.
            self._log_cb = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
            llama_cpp.llama_log_set(self._log_cb, ctypes.c_void_p(0))
        self.llm = llama_cpp.Llama(
            model_path=path,
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_ubatch=n_batch,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            logits_all=False,
            verbose=log,
        )
        self.ctx = self.llm.ctx
        self.n_vocab = int(self.llm.n_vocab())
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)

    def logits(self) -> Any:
        """The last evaluated position's logits as a zero-copy numpy view (valid until the next eval)."""
        import numpy as np

        ptr = self.lc.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens render as nothing)."""
        buf = ctypes.create_string_buffer(64)
        n = self.lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return bytes(buf.raw[:n])

    def is_end(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, end-of-turn)."""
        return bool(self.lc.llama_vocab_is_eog(self.vocab, token))

    def set_threads(self, n: int) -> None:
        self.lc.llama_set_n_threads(self.ctx, n, n)
