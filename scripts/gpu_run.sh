#!/usr/bin/env bash
# Runs on the lent H200 (device tool, repo root, `carry: ["build-cuda/gpu-pack.tar.xz"]`, made by
# scripts/gpu_pack.sh): every GPU test,
# then the benchmarks; logs and CSVs go to $OUT, a summary is printed last.
#   scripts/gpu_run.sh [tests|bench|engine|all|smol] (default all; engine: engine_bench on the 8B dummy,
#   async scheduling off and on)
# SmolLM2 (98 MB, more than one call may carry) travels as parts build-cuda/smol/part.* (made by
# `split -b 20M`, ignored, carried over consecutive calls: ignored files stay on a warm machine);
# once all are there they are joined to build-cuda/smol/SmolLM2-135M-Instruct.Q4_1.gguf.
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
SMOL=$PWD/build-cuda/smol/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$SMOL" ] && ls build-cuda/smol/part.* >/dev/null 2>&1; then
  cat build-cuda/smol/part.* > "$SMOL.tmp"
  if [ "$(stat -c %s "$SMOL.tmp")" = 98362432 ]; then mv "$SMOL.tmp" "$SMOL"; else rm -f "$SMOL.tmp"; fi
fi
ls -la build-cuda/smol/ 2>/dev/null
[ -f "$SMOL" ] && export MACSERVE_DEFAULT_MODEL=$SMOL
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
if [ "$WHAT" = smol ]; then
  timeout 300 "$P/bin/cuda_model_test" --gtest_filter='*SmolLM2*' > "$OUT/cuda_model_test_smol.log" 2>&1
  summary+="cuda_model_test SmolLM2 rc=$?: $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$OUT/cuda_model_test_smol.log" | tr '\n' ' ')\n"
  grep -E 'sample|diverged|rel_l2|FAILED|Failure|Expected|Which is|OK \]' "$OUT/cuda_model_test_smol.log" | head -40
fi
if [ "$WHAT" = tests ] || [ "$WHAT" = all ]; then
  run_test cuda_ops_test 120
  run_test cuda_model_test 120
  run_test cuda_engine_test 150
  [ "${MAC_TESTS:-1}" = 1 ] && run_test cuda_mac_model_test 300
  MACSERVE_LOG_LEVEL=info timeout 60 "$P/bin/macserve" generate --device cuda --attention full \
    --gpu-memory-utilization 0.5 --model "$P/shared/models/tiny-llama-sp" --prompt "Once upon a time" \
    --max-tokens 32 > "$OUT/generate.txt" 2> "$OUT/generate.err"
  summary+="generate --device cuda rc=$?: $(head -c 300 "$OUT/generate.txt" | tr '\n' ' ')\n"
  summary+="  $(grep -E 'gpu memory|KV .* blocks|tok/s' "$OUT/generate.err" | cut -c1-400 | tr '\n' ' ')\n"
fi
if [ "$WHAT" = bench ] || [ "$WHAT" = all ]; then
  timeout 150 "$P/bin/decode_bench" > "$OUT/gpu_decode.csv" 2> "$OUT/bench.err"
  summary+="decode_bench rc=$?\n"
  timeout 150 "$P/bin/llama_gpu_bench" "$PWD/configs/llama-3.1-8b" > "$OUT/gpu_llama8b.csv" 2>> "$OUT/bench.err"
  summary+="llama_gpu_bench rc=$?\n"
  MACSERVE_CUDA_ATTENTION=general timeout 100 "$P/bin/llama_gpu_bench" "$PWD/configs/llama-3.1-8b" prefill \
    > "$OUT/gpu_llama8b_prefill_general.csv" 2>> "$OUT/bench.err"
  summary+="llama_gpu_bench prefill (general kernel) rc=$?\n"
  cat "$OUT/gpu_decode.csv" "$OUT/gpu_llama8b.csv" "$OUT/gpu_llama8b_prefill_general.csv" "$OUT/bench.err"
fi
if [ "$WHAT" = engine ] || [ "$WHAT" = all ]; then
  for a in off on; do
    timeout 240 "$P/bin/engine_bench" --model "$PWD/configs/llama-3.1-8b" --load-format dummy --device cuda \
      --tokenizer "$P/shared/tokenizers/llama3.1" --attention full --async-scheduling $a --cached-prompts --warm-pass --concurrency 1,16,64 --prompt-len 4096 \
      --max-tokens 128 --csv "$OUT/engine_gpu.csv" > "$OUT/engine_bench_$a.txt" 2>> "$OUT/engine_bench.err"
    summary+="engine_bench 8B dummy async $a rc=$?\n$(cat "$OUT/engine_bench_$a.txt")\n"
  done
fi
# The decode grid last: its long contexts (CPU oracle) take the most time.
# DECODE_TEST_LIMIT=0 skips it.
if { [ "$WHAT" = tests ] || [ "$WHAT" = all ]; } && [ "${DECODE_TEST_LIMIT:-200}" != 0 ]; then
  run_test paged_decode_test "${DECODE_TEST_LIMIT:-200}"
fi
echo "================ summary"
printf "%b" "$summary"
