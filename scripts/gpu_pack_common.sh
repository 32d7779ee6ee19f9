# Sourced by scripts/gpu_pack.sh and scripts/gpu_mac_pack.sh: what every GPU pack holds.
# pack_binaries BUILD_DIR PACK_DIR BINS...: the binaries (stripped) and their non-system shared
#   libraries (CUDA's own come from the device's toolkit) into PACK_DIR/bin and PACK_DIR/lib.
# pack_tiny_models PACK_DIR [MODELS...]: the tiny test models of ../shared and the goldens.
pack_binaries() {
  local b_dir=$1 p_dir=$2
  shift 2
  mkdir -p "$p_dir/bin" "$p_dir/lib"
  for b in "$@"; do cp "$b_dir/bin/$b" "$p_dir/bin/"; strip "$p_dir/bin/$b" || true; done
  for b in "$@"; do
    ldd "$b_dir/bin/$b" | awk '/=> \//{print $3}'
  done | sort -u | { grep -v -E '/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|ld-linux[^/]*)\.so|/libcuda\.so|/usr/local/cuda|libcudart|libcublas' || true; } \
    | while read -r lib; do cp -L "$lib" "$p_dir/lib/"; done
}
pack_tiny_models() {
  local p_dir=$1
  shift
  local shared=${MACSERVE_SHARED_DIR:-../shared}
  mkdir -p "$p_dir/shared/models"
  for m in "$@"; do
    mkdir -p "$p_dir/shared/models/$m"
    cp "$shared/models/$m"/*.json "$shared/models/$m"/*.safetensors "$p_dir/shared/models/$m/"
    cp "$shared/models/$m"/tokenizer.model "$p_dir/shared/models/$m/" 2>/dev/null || true
  done
  cp "$shared/models/golden.json" "$p_dir/shared/models/"
}
