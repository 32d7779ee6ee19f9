#!/usr/bin/env bash
# Lays out what a macserve runtime image carries, as a tree to copy to / :
#   DEST/opt/macserve/bin/    macserve (and macserve-bench when it was built)
#   DEST/opt/macserve/lib/    every shared library they load (ldd), except the C runtime that any
#                             base image has (glibc, libstdc++, libgcc_s) and the GPU driver
#   DEST/opt/macserve/models/ the default model, when --model FILE is given
# The Dockerfiles run it in their builder stage; CI runs it on the binaries its test run built and
# builds the `prebuilt` target from DEST (docker/Dockerfile.cpu), so no compile happens twice.
# usage: docker/stage_runtime.sh [--bin-dir DIR] [--model FILE|none] [--exclude-cuda-libs] DEST
#   --exclude-cuda-libs: leave cudart/cuBLAS out (the CUDA runtime base image provides them).
set -euo pipefail

bin_dir=build/bin
model=none
exclude_cuda=0
dest=""
while (($#)); do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --exclude-cuda-libs) exclude_cuda=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "stage_runtime: unknown option $1" >&2; exit 2 ;;
    *) [ -z "$dest" ] || { echo "stage_runtime: one DEST only" >&2; exit 2; }; dest=$1; shift ;;
  esac
done
[ -n "$dest" ] || { echo "stage_runtime: DEST missing (see --help)" >&2; exit 2; }
[ -x "$bin_dir/macserve" ] || { echo "stage_runtime: no $bin_dir/macserve (build it first: scripts/build.sh)" >&2; exit 1; }

# Provided by every base image (Debian slim, Ubuntu, the CUDA images) or by the host's driver.
system_libs='^(libc|libm|libdl|libpthread|librt|libresolv|libutil|libmvec|ld-linux-x86-64|libstdc\+\+|libgcc_s|libcuda|libnvidia-.*)\.so'
cuda_libs='^(libcudart|libcublas|libcublasLt)\.so'

root="$dest/opt/macserve"
rm -rf "$root"
mkdir -p "$root/bin" "$root/lib"

binaries=("$bin_dir/macserve")
[ -x "$bin_dir/macserve-bench" ] && binaries+=("$bin_dir/macserve-bench")
for b in "${binaries[@]}"; do
  install -m 0755 "$b" "$root/bin/"
  # "libfoo.so.1 => /path/libfoo.so.1 (0x...)": copy the file under the name the loader asks for.
  missing=$(ldd "$b" | awk '/=> not found/ {print $1}')
  [ -z "$missing" ] || { echo "stage_runtime: $b needs libraries that are not installed: $missing" >&2; exit 1; }
  while read -r name path; do
    [[ "$name" =~ $system_libs ]] && continue
    ((exclude_cuda)) && [[ "$name" =~ $cuda_libs ]] && continue
    [ -e "$root/lib/$name" ] || install -m 0644 "$(readlink -f "$path")" "$root/lib/$name"
  done < <(ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
done

if [ "$model" != none ]; then
  [ -f "$model" ] || { echo "stage_runtime: model file $model not found" >&2; exit 1; }
  mkdir -p "$root/models"
  install -m 0644 "$model" "$root/models/"
fi

echo "stage_runtime: $(ls "$root/bin" | tr '\n' ' ')+ $(ls "$root/lib" | wc -l) libraries$( [ "$model" = none ] || echo " + $(basename "$model")") in $root ($(du -sh "$root" | cut -f1))" >&2
