#!/usr/bin/env bash
# Set up (idempotent), lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check steadytext_async tests examples benchmarks deploy
.venv/bin/ruff format --check steadytext_async tests examples benchmarks deploy
.venv/bin/mypy --strict steadytext_async
.venv/bin/python -m pytest "$@"
