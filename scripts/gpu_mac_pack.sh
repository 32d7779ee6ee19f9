#!/usr/bin/env bash
# Packs the MAC-on-GPU run (issue 7) for the lent H200 into DEST (an ignored folder of the checkout
# the device tool sends, e.g. ../main/build-wt7; name it in `carry`): pack.tar.xz (test and bench
# binaries, macserve, their non-system shared libraries, the tiny models, goldens, this checkout's
# test fixtures and configs, the compiled-in source path), run.sh (scripts/gpu_mac_run.sh) and
# SmolLM2 split into four parts smol/part.* (carried two per call over consecutive warm calls: a
# pack and its first parts would not fit together; a call carries at most 64 MiB with the checkout).
#   [BINS="..."] [TINY_MODELS=0] scripts/gpu_mac_pack.sh [build dir, default build] DEST
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
DEST=${2:?destination folder}
P=$DEST/pack
BINS=${BINS:-mac_kernels_test cuda_mac_model_test cuda_model_test cuda_ops_test llama_gpu_bench macserve}
. scripts/gpu_pack_common.sh
rm -rf "$P" && mkdir -p "$P/src/tests" "$P/src/configs"
pack_binaries "$B" "$P" $BINS
MODELS="tiny-llama-sp tiny-qwen2-bpe tiny-qwen3-bpe"
[ "${TINY_MODELS:-1}" = 0 ] && MODELS=""
pack_tiny_models "$P" $MODELS
# The Llama 3.1 tokenizer, for engine_bench on the 8B dummy (run.sh kernels).
mkdir -p "$P/shared/tokenizers/llama3.1"
cp "${MACSERVE_SHARED_DIR:-../shared}/tokenizers/llama3.1"/*.json "$P/shared/tokenizers/llama3.1/"
# Tests read fixtures through the source path compiled in (MACSERVE_SOURCE_DIR): run.sh links it.
cp -r tests/fixtures "$P/src/tests/"
cp -r configs/llama-3.1-8b "$P/src/configs/"
grep -m1 'CMAKE_HOME_DIRECTORY' "$B/CMakeCache.txt" | cut -d= -f2 > "$P/source_dir"
git rev-parse --short HEAD > "$P/commit"
git status --short --untracked-files=no | wc -l > "$P/dirty_files"
tar -cf - -C "$P" . | xz -T2 -6 > "$DEST/pack.tar.xz"
rm -rf "$P"
cp scripts/gpu_mac_run.sh "$DEST/run.sh"
MODEL=${MACSERVE_DEFAULT_MODEL:-${HOME:-.}/.cache/macserve/models/SmolLM2-135M-Instruct.Q4_1.gguf}
if [ -f "$MODEL" ] && [ ! -f "$DEST/smol/part.aa" ]; then
  mkdir -p "$DEST/smol" && split -b 24M "$MODEL" "$DEST/smol/part."
fi
du -sh "$DEST/pack.tar.xz" "$DEST/smol" 2>/dev/null || true
