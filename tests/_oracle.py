"""Independent oracle for the golden outputs: llama-cpp-python's own ``Llama`` greedy decode of the same GGUF.

Run as a script (``python tests/_oracle.py MODEL_PATH MAX_NEW < prompts.json``; prints JSON ``{prompt: {"text",
"token_ids"}}``) in a fresh process, so that ggml's once-per-process kernel switch (``GGML_CPU_TILED_MM``) is set
before any matmul. Same settings as our worker: CPU repack off, flash attention off, tiled K-quant matmul off,
one sequence, ``n_batch = n_ubatch = 512``. ``Llama.reset()`` before every call: its prompt-prefix reuse would
otherwise change how the prompt is split into batches, and so the bytes. Nothing of steadytext_async is imported.
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
        params = default_params()
        params.use_extra_bufts = False
        return params

    lc.llama_model_default_params = no_repack  # Llama() has no argument for it; it calls this at construction
    llm = llama_cpp.Llama(
        model_path=path, n_ctx=4096, n_batch=512, n_ubatch=512, n_threads=1, flash_attn=False, verbose=False
    )
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


if __name__ == "__main__":
    main()
