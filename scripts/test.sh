#!/usr/bin/env bash
# Run the whole test suite. Installs first (see setup.sh); the tests start their own Temporal
# dev server, local model server and loopback stubs, and stop them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
VENV="${CHORUS_VENV:-.venv}"
exec "$VENV/bin/python" -m pytest -q "$@"
