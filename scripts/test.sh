#!/usr/bin/env bash
# The README's test command: installs dependencies, fetches the default model, builds everything
# (CUDA sources too when nvcc is present), runs every test with ctest (GPU tests skip without a
# GPU), then the style checks: clang-format and clang-tidy (scripts/check_style.sh).
# MACSERVE_SANITIZE_TESTS=1 also builds and runs the CPU tests under ASan+UBSan.
# Each phase ends with a line "test.sh: PHASE took N s" on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
phase() {
  local name=$1 t=$SECONDS
  shift
  "$@"
  echo "test.sh: $name took $((SECONDS - t)) s" >&2
}
phase "install_deps" scripts/install_deps.sh
export MACSERVE_DEFAULT_MODEL=${MACSERVE_DEFAULT_MODEL:-$(scripts/fetch_default_model.sh)}
phase "build" scripts/build.sh
phase "ctest" bash -c 'cd build && ctest --output-on-failure -j "$(nproc)" --timeout 1200'
phase "clang-format" scripts/check_style.sh format
phase "clang-tidy" scripts/check_style.sh tidy
if [ "${MACSERVE_SANITIZE_TESTS:-0}" = 1 ]; then
  # -O1 -g1: line tables only (sanitizer reports keep file:line). Under ASan+UBSan, -O1 compiles
  # the template-heavy files in 0.5-0.65x of -O2's time (openai_protocol_test.cc 107 -> 57 s,
  # server/http/src/session.cc 218 -> 141 s); the CPU kernels, where the tests spend their time,
  # keep their own -O3 (kernels/CMakeLists.txt).
  phase "sanitized build" env BUILD_DIR=build-asan BUILD_TYPE=RelWithDebInfo scripts/build.sh \
    -DMACSERVE_CUDA=OFF -DMACSERVE_SANITIZE=address,undefined \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG"
  phase "sanitized ctest" bash -c 'cd build-asan && ctest --output-on-failure -j "$(nproc)" --timeout 1800'
fi
