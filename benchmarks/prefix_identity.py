"""Experiment behind prefix reuse: is a chunk-aligned prompt prefix's KV state byte-identical once restored?

Low-level, on ``LlamaModel`` alone (no batcher, no pool). Four prompts share a long raw prefix. Each is decoded
greedily alone in sequence 0 (the reference). Then prompt 0 is evaluated in sequence 1 chunk by chunk and its state
saved at every chunk boundary (``llama_state_seq_get_data``); for each case, a target prompt restores a saved state
into sequence 2 (``llama_state_seq_set_data``; cut back with ``llama_memory_seq_rm`` when it is longer than the
reused prefix), evaluates the rest of its prompt in chunks from there, and decodes while the three other prompts
run in sequences 0, 1 and 3 of the same steps (they join one by one, as the batcher admits them). Every logits row
of every sequence (the prompt's last, then each step's) is hashed; a case is identical when all four sequences'
tokens and logits digests equal their alone references. One case reuses a prefix that is *not* chunk-aligned (one
and a third chunks) to show the grid is what makes it hold.

    python benchmarks/prefix_identity.py [--model PATH] [--n-batch 512] [--rules 900]

Prints one JSON line per case and a summary line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from typing import Any

import numpy as np

from steadytext_async._worker.child.llama import LlamaModel

WORDS = (
    "the quick brown fox jumps over a lazy dog while seven wizards quietly hex bold jumbo zebras "
    "in the middle of a long afternoon of careful determinism testing "
).split()


def text(n: int, salt: int) -> str:
    rng = np.random.default_rng(salt)
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n))


Job = tuple[int, list[int], Any]  # (sequence, prompt, (state, keep) or None)


def run(m: LlamaModel, jobs: list[Job], steps: int, stagger: int = 3) -> tuple[list[tuple[list[int], str]], float]:
    """Prefill one job at a time (restoring its state first, if given), interleaved with batched greedy steps of
    the jobs already decoding, like the batcher. Returns per job (tokens, logits digest) and job 1's prompt time."""
    toks: dict[int, list[int]] = {j: [] for j in range(len(jobs))}
    digests = {j: hashlib.sha256() for j in range(len(jobs))}
    nxt: dict[int, int] = {}
    pending = list(range(len(jobs)))
    tick, t_prompt = 0, 0.0
    while pending or nxt:
        if pending and tick % stagger == 0:
            j = pending.pop(0)
            seq, prompt, reuse = jobs[j]
            t0 = time.perf_counter()
            start = 0
            if reuse is not None:
                m.load_state(seq, reuse[0], reuse[1])
                start = reuse[1]
            row = None
            for s in range(start, len(prompt), m.n_batch):
                row = m.prefill(seq, prompt, s)
            assert row is not None
            if j == min(1, len(jobs) - 1):
                t_prompt = time.perf_counter() - t0
            digests[j].update(row.tobytes())
            nxt[j] = int(np.argmax(row))
            toks[j].append(nxt[j])
        live = sorted(nxt, key=lambda j: jobs[j][0])
        if live:
            rows = m.step([(jobs[j][0], nxt[j]) for j in live])
            for j, row in zip(live, rows, strict=True):
                digests[j].update(row.tobytes())
                nxt[j] = int(np.argmax(row))
                toks[j].append(nxt[j])
                if len(toks[j]) >= steps:
                    del nxt[j]
                    m.clear(jobs[j][0])
        tick += 1
    return [(toks[j], digests[j].hexdigest()) for j in range(len(jobs))], t_prompt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="GGUF path (default: the embedded SmolLM2)")
    ap.add_argument("--n-batch", type=int, default=512)
    ap.add_argument("--rules", type=int, default=900, help="words in the shared prefix")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.model is None:
        from steadytext_async._registry import embedded_model

        args.model = str(embedded_model().path)
    nb = args.n_batch
    m = LlamaModel(args.model, n_ctx=4096, n_batch=nb, n_threads=args.threads, n_seq=4)
    shared = text(args.rules, 1)
    texts = [f"{shared}\nQuestion {i}: {text(40 + 37 * i, 100 + i)}\nAnswer:" for i in range(4)]
    prompts = [m.tokenize(t.encode(), add_bos=True, special=False) for t in texts]
    ref = [run(m, [(0, p, None)], args.steps)[0][0] for p in prompts]
    p0 = prompts[0]
    m.clear(1)
    states = {}
    for s in range(0, len(p0), nb):
        m.prefill(1, p0, s)
        states[min(len(p0), s + nb)] = m.save_state(1, m.state_size(1))
    m.clear(1)
    full = max(states)
    cases = [(full, full - full % nb, (0,)), (nb, nb, (0, 1, 2, 3)), (full, nb, (1, 3)), (full, nb + nb // 3, (0, 2))]
    n_cases = n_bad = 0
    misaligned: list[bool] = []
    for saved, keep, targets in cases:
        for i in targets:
            p = prompts[i]
            if keep >= len(p) or p[:keep] != p0[:keep]:
                continue
            others = [(q, prompts[(i + k + 1) % 4], None) for k, q in enumerate((0, 1, 3))]
            res, t_prompt = run(m, [others[0], (2, p, (states[saved], keep)), others[1], others[2]], args.steps)
            ok = res[1] == ref[i] and all(res[x] == ref[(i + k + 1) % 4] for k, x in enumerate((0, 2, 3)))
            if keep % nb:
                misaligned.append(ok)
            else:
                n_cases += 1
                n_bad += not ok
            print(
                json.dumps(
                    {
                        "figure": "prefix_identity_case",
                        "saved_tokens": saved,
                        "reused_tokens": keep,
                        "chunk_aligned": keep % nb == 0,
                        "prompt": i,
                        "prompt_tokens": len(p),
                        "identical": ok,
                        "prompt_eval_s": round(t_prompt, 3),
                    }
                ),
                flush=True,
            )
    sizes = {k: len(v) for k, v in states.items()}
    m.close()
    summary = {"aligned_cases": n_cases, "aligned_differ": n_bad, "misaligned_identical": misaligned}
    print(json.dumps({"figure": "prefix_identity", **summary, "state_bytes": sizes}))


if __name__ == "__main__":
    main()
