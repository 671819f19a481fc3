#!/usr/bin/env bash
# Set up (idempotent) and run the main job: generate text offline from the embedded model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/steadytext-async generate "${1:-Once upon a time, in a quiet village,}" --max-new-tokens "${MAX_NEW_TOKENS:-64}"
