#!/usr/bin/env bash
# The main job on the embedded default: install, start Temporal + the local model + a worker,
# then run a 3-agent sequential pipeline over a real document and print the result and the
# Temporal UI link. Stop the stack afterwards with: .venv/bin/chorus dev down
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
VENV="${CHORUS_VENV:-.venv}"
"$VENV/bin/chorus" dev up
"$VENV/bin/chorus" run sequential \
  --agents analyst,summarizer,critic \
  --task "Brief an engineering manager on the two incidents in this history and what they teach" \
  --input docs/samples/debian-history-excerpt.txt
