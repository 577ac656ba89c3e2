#!/usr/bin/env bash
# Create (or bring up to date) the venv for benchmarks/kvpress_needle.py: NVIDIA's `kvpress`
# PyPI package (prefill-time KV-cache presses) on the CPU build of torch. kvpress pins
# transformers<5.3 while ragc's own venv has a newer one, hence a venv of its own. ragc is
# not installed here: the runner reads a local model folder and a JSONL file, nothing else.
# Idempotent: run it again at any time.
#
#   bash benchmarks/setup_kvpress_env.sh            # venv .venv-kvpress beside the repo's .venv
#   KVPRESS_VENV=../venv-kvpress PYTHON=python3.11 bash benchmarks/setup_kvpress_env.sh
#
# KVPRESS_VENV (a relative one is taken from the current directory) is the folder
# benchmarks/kvpress_needle.py names in its messages too.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${KVPRESS_VENV:-$REPO/.venv-kvpress}
PYTHON=${PYTHON:-python3.11}
KVPRESS_VERSION=0.5.5
# 0.5.5 declares transformers<5.3,>=4.56.0 (its METADATA): the newest release below 5.3.
TRANSFORMERS_VERSION=5.2.0

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# keep the venv out of git whatever its name (the repository's .gitignore lists .venv-*/)
[ -e "$VENV/.gitignore" ] || echo '*' > "$VENV/.gitignore"
# This machine's pip config names local wheel folders that may not exist: hide those
# "Location ... is ignored" warnings, keep every other message and pip's exit code.
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }; }
pip=(quiet "$VENV/bin/python" -m pip --disable-pip-version-check -q)

# torch first and pinned: that resolves to the CPU wheel here; an unpinned torch pulls
# the CUDA build (~5 GB).
"${pip[@]}" install torch==2.13.0
# torch named again so that no later requirement can move pip off that wheel.
"${pip[@]}" install torch==2.13.0 "kvpress==$KVPRESS_VERSION" "transformers==$TRANSFORMERS_VERSION"

# Check: kvpress imports (it patches transformers' attention functions on import), the
# presses kvpress_needle.py uses exist, torch is still the CPU wheel, no CUDA package came in.
"$VENV/bin/python" -c "import importlib.metadata as md, torch, transformers
from kvpress import SnapKVPress, KnormPress, ExpectedAttentionPress, StreamingLLMPress
assert torch.version.cuda is None, torch.__version__
print('ok: kvpress', md.version('kvpress'), 'transformers', transformers.__version__, 'torch', torch.__version__)"
if "$VENV/bin/python" -m pip list --disable-pip-version-check 2>/dev/null | grep -i '^nvidia-' >&2; then
  echo "CUDA packages (above) were installed in $VENV" >&2
  exit 1
fi
echo "Benchmark venv ready: $VENV"
