#!/usr/bin/env bash
# Runs on the lent H200 (device tool, repo root, `carry: ["build-cuda/gpu-pack.tar.xz"]`, made by
# scripts/gpu_pack.sh): every GPU test,
# then the benchmarks; logs and CSVs go to $OUT, a summary is printed last.
#   scripts/gpu_run.sh [tests|bench|all] (default all)
set -uo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
P=$PWD/build-cuda/gpu-pack
if [ -f build-cuda/gpu-pack.tar.xz ]; then rm -rf "$P" && mkdir -p "$P" && tar -xJf build-cuda/gpu-pack.tar.xz -C "$P"; fi
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
# Tests read fixtures through the source path compiled in (/work/main): point it at this checkout.
if [ ! -e /work/main ]; then mkdir -p /work && ln -s "$PWD" /work/main; fi
CUBLAS_PY=$(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null || true)
export LD_LIBRARY_PATH=$P/lib:/usr/local/cuda/lib64:${CUBLAS_PY}:${LD_LIBRARY_PATH:-}
export MACSERVE_SHARED_DIR=$P/shared
[ -f "$P/shared/SmolLM2-135M-Instruct.Q4_1.gguf" ] && export MACSERVE_DEFAULT_MODEL=$P/shared/SmolLM2-135M-Instruct.Q4_1.gguf
export OMP_NUM_THREADS=16
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used --format=csv | tee "$OUT/gpu.txt"
git rev-parse HEAD 2>/dev/null | tee -a "$OUT/gpu.txt"
summary=""
run_test() {  # name, time limit (s)
  local start=$(date +%s)
  timeout "$2" "$P/bin/$1" > "$OUT/$1.log" 2>&1
  local rc=$?
  summary+="$1 rc=$rc $(( $(date +%s) - start ))s: $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$OUT/$1.log" | tr '\n' ' ')\n"
  grep -E 'FAILED|Failure|rel_l2|diverged|Expected|Which is' "$OUT/$1.log" | head -40
}
if [ "$WHAT" = tests ] || [ "$WHAT" = all ]; then
  run_test cuda_ops_test 120
  run_test cuda_model_test 120
  MACSERVE_LOG_LEVEL=warn timeout 60 "$P/bin/macserve" generate --device cuda --attention full \
    --model "$P/shared/models/tiny-llama-sp" --prompt "Once upon a time" --max-tokens 32 > "$OUT/generate.txt" 2>&1
  summary+="generate --device cuda rc=$?: $(head -c 300 "$OUT/generate.txt" | tr '\n' ' ')\n"
fi
if [ "$WHAT" = bench ] || [ "$WHAT" = all ]; then
  timeout 150 "$P/bin/decode_bench" > "$OUT/gpu_decode.csv" 2> "$OUT/bench.err"
  summary+="decode_bench rc=$?\n"
  timeout 150 "$P/bin/llama_gpu_bench" "$PWD/configs/llama-3.1-8b" > "$OUT/gpu_llama8b.csv" 2>> "$OUT/bench.err"
  summary+="llama_gpu_bench rc=$?\n"
  cat "$OUT/gpu_decode.csv" "$OUT/gpu_llama8b.csv" "$OUT/bench.err"
fi
# The decode grid last: its long contexts (CPU oracle) take the most time.
# DECODE_TEST_LIMIT=0 skips it.
if { [ "$WHAT" = tests ] || [ "$WHAT" = all ]; } && [ "${DECODE_TEST_LIMIT:-200}" != 0 ]; then
  run_test paged_decode_test "${DECODE_TEST_LIMIT:-200}"
fi
echo "================ summary"
printf "%b" "$summary"
