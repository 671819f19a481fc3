"""Independent oracle for the golden outputs: llama-cpp-python's own ``Llama`` greedy decode of the same GGUF.

Run as a script in a fresh process, so that ggml's once-per-process kernel switch (``GGML_CPU_TILED_MM``) is set
before any matmul:

- ``python tests/_oracle.py MODEL_PATH MAX_NEW < prompts.json`` prints JSON ``{prompt: {"text", "token_ids"}}``
  (``Llama.generate`` of the raw prompt after BOS);
- ``python tests/_oracle.py MODEL_PATH MAX_NEW --chat < conversations.json`` (a list of message lists) prints a list
  in the same order, each from ``Llama.create_chat_completion`` (its Jinja2 formatter renders the GGUF's template).

Same settings as our worker: CPU repack off, flash attention off, tiled K-quant matmul off, one sequence,
``n_batch = n_ubatch = 512``. ``Llama.reset()`` before every call: its prompt-prefix reuse would otherwise change how
the prompt is split into batches, and so the bytes. Nothing of steadytext_async is imported.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["GGML_CPU_TILED_MM"] = "0"

import llama_cpp
from llama_cpp import llama_cpp as lc


def main() -> None:
    path, max_new = sys.argv[1], int(sys.argv[2])
    prompts = json.load(sys.stdin)
    default_params = lc.llama_model_default_params

    def no_repack() -> lc.llama_model_params:
        params: lc.llama_model_params = default_params()
        params.use_extra_bufts = False
        return params

    lc.llama_model_default_params = no_repack  # Llama() has no argument for it; it calls this at construction
    llm = llama_cpp.Llama(
        model_path=path, n_ctx=4096, n_batch=512, n_ubatch=512, n_threads=1, flash_attn=False, verbose=False
    )
    if "--chat" in sys.argv[3:]:
        print(json.dumps([_chat(llm, messages, max_new) for messages in prompts]))
        llm.close()
        return
    out = {}
    for prompt in prompts:
        llm.reset()
        tokens = llm.tokenize(prompt.encode(), add_bos=True, special=False)
        ids: list[int] = []
        for token in llm.generate(tokens, temp=0.0, reset=False):
            if llm.token_eos() == token or len(ids) >= max_new:
                break
            ids.append(token)
            if len(ids) >= max_new:
                break
        text = b"".join(llm.detokenize([t]) for t in ids).decode("utf-8", "replace")
        out[prompt] = {"text": text, "token_ids": ids}
    llm.close()
    print(json.dumps(out))


def _chat(llm: llama_cpp.Llama, messages: list[dict[str, str]], max_new: int) -> dict[str, object]:
    """Greedy ``create_chat_completion`` (its Jinja2 formatter renders the GGUF's template), from a clean state."""
    llm.reset()
    ids: list[int] = []
    original = llm.sample

    def recording_sample(*args: object, **kwargs: object) -> int:
        token = int(original(*args, **kwargs))  # type: ignore[arg-type]
        ids.append(token)
        return token

    llm.sample = recording_sample  # type: ignore[method-assign]
    try:
        reply = llm.create_chat_completion(messages=messages, temperature=0.0, max_tokens=max_new)  # type: ignore[arg-type]
    finally:
        llm.sample = original  # type: ignore[method-assign]
    text = reply["choices"][0]["message"]["content"]  # type: ignore[index]
    return {"text": text, "token_ids": [t for t in ids if not lc.llama_vocab_is_eog(llm._model.vocab, t)][:max_new]}


if __name__ == "__main__":
    main()
