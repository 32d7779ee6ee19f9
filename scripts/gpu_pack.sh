#!/usr/bin/env bash
# Packs what the H200 run needs into build-cuda/gpu-pack.tar.xz (ignored; name it in the device
# tool's `carry`): the GPU test and benchmark binaries, macserve, their non-system shared libraries
# (CUDA's own come from the device's toolkit), and the tiny test models.
#   scripts/gpu_pack.sh [build dir, default build-cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build-cuda}
P=$B/gpu-pack
BINS="cuda_ops_test paged_decode_test cuda_model_test cuda_engine_test cuda_mac_model_test mac_kernels_test decode_bench llama_gpu_bench engine_bench macserve"
. scripts/gpu_pack_common.sh
rm -rf "$P"
pack_binaries "$B" "$P" $BINS
pack_tiny_models "$P" tiny-llama-sp tiny-qwen2-bpe tiny-qwen3-bpe
SHARED=${MACSERVE_SHARED_DIR:-../shared}
# The Llama 3.1 tokenizer, for the engine on the 8B dummy (engine_bench --tokenizer).
mkdir -p "$P/shared/tokenizers/llama3.1" && cp "$SHARED/tokenizers/llama3.1"/*.json "$P/shared/tokenizers/llama3.1/"
# The carried tree is limited to 64 MiB: ship it compressed (scripts/gpu_run.sh unpacks it).
tar -cf - -C "$P" . | xz -T2 -6 > "$B/gpu-pack.tar.xz"
du -sh "$P" "$B/gpu-pack.tar.xz"
