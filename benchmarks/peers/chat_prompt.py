"""The exact prompt tokens the SDK evaluates for a plain ``prompt`` on a chat model, for the peers.

The default model is instruction-tuned, so the SDK renders ``prompt`` as one user message through the GGUF's own
chat template (with the template's default system prompt) before evaluating it. A peer fed the bare prompt text
would evaluate a shorter prompt and so do less work per request; the benchmarks give every peer these token ids
instead (``llama-server``'s ``/completion`` and llama-cpp-python's ``create_completion`` both take a token list).
The callers check the count against the SDK's ``usage.prompt_tokens``.
"""

from __future__ import annotations

import ctypes
from typing import Any

from steadytext_async._tools import render

__all__ = ["prompt_texts", "prompt_tokens"]


def _vocab(model_path: str) -> Any:
    import llama_cpp

    keep: Any = llama_cpp.llama_log_callback(lambda level, text, data: None)
    _SILENT.append(keep)
    llama_cpp.llama_log_set(keep, ctypes.c_void_p(0))
    return llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)


_SILENT: list[Any] = []  # log callbacks stay alive as long as llama.cpp may call them


def _render(llm: Any, prompts: list[str]) -> list[str] | None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return None

    def piece(token: int) -> str:  # as the worker: special tokens render as nothing
        return str(llm.detokenize([token], special=False).decode("utf-8", "replace"))

    fmt = Jinja2ChatFormatter(template=template, eos_token=piece(llm.token_eos()), bos_token=piece(llm.token_bos()))
    return [render(fmt, template, [{"role": "user", "content": p}], None, None) for p in prompts]


def prompt_texts(model_path: str, prompts: list[str]) -> list[str]:
    """Each prompt as the text the SDK evaluates (its special tokens spelled out; peers that parse special tokens in
    a text prompt, as ``/v1/completions`` of llama-server and llama-cpp-python do, get the same tokens)."""
    llm = _vocab(model_path)
    try:
        return _render(llm, prompts) or list(prompts)
    finally:
        llm.close()


def prompt_tokens(model_path: str, prompts: list[str]) -> list[list[int]]:
    """Each prompt's tokens as the SDK evaluates it on ``model_path`` (bare text for a model without a template)."""
    llm = _vocab(model_path)
    try:
        texts = _render(llm, prompts)
        if texts is None:
            return [llm.tokenize(p.encode("utf-8"), add_bos=True, special=False) for p in prompts]
        return [llm.tokenize(t.encode("utf-8"), add_bos=False, special=True) for t in texts]
    finally:
        llm.close()
