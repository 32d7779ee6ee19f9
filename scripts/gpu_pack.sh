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
rm -rf "$P" && mkdir -p "$P/bin" "$P/lib" "$P/shared/models"
for b in $BINS; do cp "$B/bin/$b" "$P/bin/"; strip "$P/bin/$b" || true; done
for b in $BINS; do
  ldd "$B/bin/$b" | awk '/=> \//{print $3}'
done | sort -u | grep -v -E '/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|ld-linux[^/]*)\.so|/libcuda\.so|/usr/local/cuda|libcudart|libcublas' \
  | while read -r lib; do cp -L "$lib" "$P/lib/"; done
SHARED=${MACSERVE_SHARED_DIR:-../shared}
for m in tiny-llama-sp tiny-qwen2-bpe tiny-qwen3-bpe; do
  mkdir -p "$P/shared/models/$m"
  cp "$SHARED/models/$m"/*.json "$SHARED/models/$m"/*.safetensors "$P/shared/models/$m/"
  cp "$SHARED/models/$m"/tokenizer.model "$P/shared/models/$m/" 2>/dev/null || true
done
cp "$SHARED/models/golden.json" "$P/shared/models/"
# The Llama 3.1 tokenizer, for the engine on the 8B dummy (engine_bench --tokenizer).
mkdir -p "$P/shared/tokenizers/llama3.1" && cp "$SHARED/tokenizers/llama3.1"/*.json "$P/shared/tokenizers/llama3.1/"
# The carried tree is limited to 64 MiB: ship it compressed (scripts/gpu_run.sh unpacks it).
tar -cf - -C "$P" . | xz -T2 -6 > "$B/gpu-pack.tar.xz"
du -sh "$P" "$B/gpu-pack.tar.xz"
