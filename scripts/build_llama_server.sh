#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` from the source vendored in the llama-cpp-python sdist the engine runs, for
# the benchmarks' peer only (never on the test path). Cached like the wheelhouse, keyed by version and flags; a later
# run reuses the binary. About 10 minutes on 2 cores; run it under `nice -n 19` on a shared machine.
# Prints the binary's path on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
LLAMA_VERSION=0.3.36
FLAGS_ID=native-off-openmp-off
ROOT=${STEADYTEXT_LLAMA_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/steadytext-async/llama-server}
OUT=$ROOT/$LLAMA_VERSION-$FLAGS_ID
BIN=$OUT/bin/llama-server
JOBS=${JOBS:-2}

if [ -x "$BIN" ]; then
    echo "build_llama_server: reusing $BIN" >&2
    echo "$BIN"
    exit 0
fi
mkdir -p "$ROOT/src" "$OUT"
SDIST=$ROOT/src/llama_cpp_python-$LLAMA_VERSION.tar.gz
if [ ! -f "$SDIST" ]; then
    "$PYTHON" -m pip --disable-pip-version-check download -q --no-deps --no-binary :all: \
        -d "$ROOT/src" "llama-cpp-python==$LLAMA_VERSION"
fi
WORK=$(mktemp -d "$ROOT/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
tar -xzf "$SDIST" -C "$WORK"
SRC=$WORK/llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp
echo "build_llama_server: building llama-server from $SRC (one-time, ~10 min)" >&2
# The same flags as the wheelhouse (no native code, no OpenMP), so both run the same kernels.
cmake -S "$SRC" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$WORK/build" --target llama-server -j "$JOBS" >&2
mkdir -p "$OUT/bin.tmp"
cp "$WORK/build/bin/llama-server" "$OUT/bin.tmp/"
rm -rf "$OUT/bin"
mv "$OUT/bin.tmp" "$OUT/bin"
echo "$BIN"
