#!/usr/bin/env bash
# Set up (idempotent), lint, type-check and run the fast test tier (pass -m slow for the slow tier;
# see CONTRIBUTING.md). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check steadytext_async tests examples benchmarks deploy
.venv/bin/ruff format --check steadytext_async tests examples benchmarks deploy
.venv/bin/mypy --strict steadytext_async tests examples benchmarks deploy
.venv/bin/python -m pytest "$@"
