#!/usr/bin/env bash
# Set up (idempotent) and run the main job: generate text offline from the embedded model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/steadytext-async generate "${1:-Write a haiku about programming}" --max-new-tokens "${MAX_NEW_TOKENS:-64}"
