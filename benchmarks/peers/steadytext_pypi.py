"""The original ``steadytext`` (PyPI) and steadytext-async through the same script, prompts and GGUF.

Run twice by ``benchmarks/run``: ``--impl original`` with the peer venv's interpreter (steadytext and the same
llama-cpp-python wheel as ours) and ``--impl ours`` with the project's. Each run starts a fresh child process that
imports the library, preloads the model, and generates every prompt once, then repeats the first
prompt ``--repeats`` times (each one a result-cache hit). Both libraries get a fresh, empty cache directory.

The original is pointed at our embedded GGUF (gemma-3-270m base, Q4_K_M) through its own settings: the model cache
directory (``XDG_CACHE_HOME``) holds a link to the file and ``STEADYTEXT_GENERATION_MODEL_FILENAME`` names it, so it
never downloads; ``STEADYTEXT_DISABLE_DAEMON=1`` keeps it in-process like ours. Prints JSON lines: ``first_call``
(seconds from interpreter start to the first result, and its parts), ``cached_repeat`` (p50/p99 in µs),
``output`` per prompt (the text it returned) and ``summary`` (how many were empty).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPTS = [
    "Once upon a time",
    "The capital of France is",
    "def fibonacci(n):",
    "Write a haiku about the sea.",
    "Q: What is 2 + 2?\nA:",
]
MAX_NEW_TOKENS = 24

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
impl, repeats, prompts, tokens = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
if impl == "original":
    import steadytext as lib
    def preload():
        lib.preload_models(skip_embeddings=True)
    def gen(p):
        return lib.generate(p, max_new_tokens=tokens)
else:
    import steadytext_async as lib
    def preload():
        lib.preload_models()
    def gen(p):
        return lib.generate(p, max_new_tokens=tokens)
t_import = time.perf_counter() - t0
t = time.perf_counter()
preload()
t_load = time.perf_counter() - t
t = time.perf_counter()
first = gen(prompts[0])
t_first = time.perf_counter() - t
texts = [first] + [gen(p) for p in prompts[1:]]
samples = []
for _ in range(repeats):
    t = time.perf_counter()
    again = gen(prompts[0])
    samples.append(time.perf_counter() - t)
    assert again == first, (again, first)
print(json.dumps({"import_s": t_import, "load_s": t_load, "first_generate_s": t_first, "texts":
                  [None if x is None else str(x)
                  for x in texts], "samples": samples}), flush=True)
"""


def emit(name: str, **fields: Any) -> None:
    print(json.dumps({"figure": name, **fields}), flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def gguf_path() -> Path:
    """Our embedded model, resolved by the project's interpreter (the peer venv has no steadytext_async)."""
    python = os.environ.get("STEADYTEXT_BENCH_PROJECT_PYTHON", sys.executable)
    code = "from steadytext_async._registry import embedded_model; print(embedded_model().path)"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def environment(impl: str, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEADYTEXT_") or k.startswith("STEADYTEXT_BENCH")}
    if impl == "original":
        model = gguf_path()
        models = tmp / "xdg" / "steadytext" / "models"
        models.mkdir(parents=True)
        (models / model.name).symlink_to(model)
        env.update(
            XDG_CACHE_HOME=str(tmp / "xdg"),
            STEADYTEXT_GENERATION_MODEL_FILENAME=model.name,
            STEADYTEXT_DISABLE_DAEMON="1",
            HF_HUB_OFFLINE="1",
        )
    else:
        env.update(STEADYTEXT_CACHE_DIR=str(tmp / "cache"))
    return env


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=("original", "ours"), required=True)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"bench-peer-{args.impl}-") as tmp:
        env = environment(args.impl, Path(tmp))
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD, args.impl, str(args.repeats), json.dumps(PROMPTS), str(MAX_NEW_TOKENS)],
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
        )
        wall = time.perf_counter() - t0
    if out.returncode != 0:
        tail = " | ".join(out.stderr.strip().splitlines()[-4:])
        print(f"{args.impl} failed: {tail}", file=sys.stderr)
        return 1
    r = json.loads(out.stdout.strip().splitlines()[-1])
    version = "steadytext" if args.impl == "original" else "steadytext-async"
    seconds = r["import_s"] + r["load_s"] + r["first_generate_s"]
    emit(
        "first_call",
        impl=args.impl,
        seconds=round(seconds, 3),
        import_s=round(r["import_s"], 3),
        load_s=round(r["load_s"], 3),
        first_generate_s=round(r["first_generate_s"], 3),
        first_output_chars=len(r["texts"][0] or ""),
        child_process_wall_s=round(wall, 3),
        note="import + preload_models + first generate, fresh process",
    )
    emit(
        "cached_repeat",
        impl=args.impl,
        n=len(r["samples"]),
        p50_us=round(pct(r["samples"], 0.5) * 1e6, 1),
        p99_us=round(pct(r["samples"], 0.99) * 1e6, 1),
    )
    for prompt, text in zip(PROMPTS, r["texts"], strict=True):
        emit("output", impl=args.impl, prompt=prompt, text=text, chars=len(text or ""))
    empty = sum(1 for t in r["texts"] if not t)
    emit(
        "summary",
        impl=args.impl,
        package=version,
        prompts=len(PROMPTS),
        empty_outputs=empty,
        max_new_tokens=MAX_NEW_TOKENS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
