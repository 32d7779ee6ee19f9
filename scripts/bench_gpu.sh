#!/usr/bin/env bash
# The GPU benchmarks, on a machine with an NVIDIA GPU, after scripts/build.sh (or any build with
# CUDA and MACSERVE_BENCH on). Each writes its CSV under docs/perf/, replacing the last results;
# the pages that read them: docs/perf/gpu.md and docs/perf/mac_gpu.md. Report, never gate.
#   scripts/bench_gpu.sh [decode] [linear] [prefill] [llama8b] [deterministic] [engine] [mac]
#   [mac_e2e] (default: all)
# decode   decode_bench: the paged decode kernel's bandwidth        -> gpu_decode.csv
# linear   linear_gpu_bench: an 8B layer's linear layers at m 1-2048 through cuBLAS (achieved
#          bandwidth, TFLOP/s) and the fixed-order GEMM of --deterministic -> gpu_linear.csv
# prefill  prefill_attention_bench: the prefill attention kernel's TFLOP/s, chunk 2K/8K x prior
#          0-128K                                                    -> gpu_prefill_attention.csv
# llama8b  llama_gpu_bench: the Llama-3.1-8B-shaped dummy model's decode steps and its prefill
#          chunks of 2K/8K after 0-120K prior tokens                 -> gpu_llama8b.csv
# deterministic  the same with --deterministic (docs/perf/deterministic.md)
#                                                                    -> gpu_llama8b_deterministic.csv
# engine   engine_bench on the 8B dummy (4K-token cached prompts, 128 greedy tokens, batch 1/16/64):
#          async scheduling off/on, then device sampling on/off      -> engine_gpu.csv,
#                                                                       engine_gpu_device_sampling.csv
# mac      mac_cuda_bench full: the MAC kernels vs paged_decode      -> mac_gpu.csv (+ mac_speedup.svg)
# mac_e2e  llama_gpu_bench mac: the 8B dummy with forced MAC hit rates -> mac_gpu_e2e.csv
# Environment: BUILD_DIR (build) or BIN_DIR (its bin/), PERF_DIR (docs/perf), CONFIG_DIR
# (configs/llama-3.1-8b), MACSERVE_SHARED_DIR (../shared beside the checkout: the Llama 3.1
# tokenizer for engine_bench). scripts/gpu_bundle.sh carries this script to a machine without the
# source tree.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN_DIR:-$ROOT/${BUILD_DIR:-build}/bin}
PERF=${PERF_DIR:-$ROOT/docs/perf}
CONFIG=${CONFIG_DIR:-$ROOT/configs/llama-3.1-8b}
SHARED=${MACSERVE_SHARED_DIR:-$ROOT/../shared}
WHAT=("$@")
((${#WHAT[@]})) || WHAT=(decode linear prefill llama8b deterministic engine mac mac_e2e)

need() {  # the binaries a benchmark runs
  for b in "$@"; do
    [ -x "$BIN/$b" ] || { echo "bench_gpu: $BIN/$b not found (build with CUDA and MACSERVE_BENCH=ON)" >&2; exit 1; }
  done
}
say() { echo "bench_gpu: $*" >&2; }

engine_runs() {  # CSV, then one engine_bench flag per run (its --csv appends a row per batch size)
  local csv=$PERF/$1
  shift
  rm -f "$csv"
  for flags in "$@"; do
    say "engine_bench $flags -> $csv"
    # shellcheck disable=SC2086  # $flags is "--flag value"
    "$BIN/engine_bench" --model "$CONFIG" --load-format dummy --device cuda --tokenizer "$SHARED/tokenizers/llama3.1" \
      --attention full --cached-prompts --warm-pass --concurrency 1,16,64 --prompt-len 4096 --max-tokens 128 \
      $flags --csv "$csv"
  done
}

mkdir -p "$PERF"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader >&2
for w in "${WHAT[@]}"; do
  case $w in
    decode)
      need decode_bench
      say "decode_bench -> $PERF/gpu_decode.csv"
      "$BIN/decode_bench" > "$PERF/gpu_decode.csv" ;;
    linear)
      need linear_gpu_bench
      say "linear_gpu_bench -> $PERF/gpu_linear.csv"
      "$BIN/linear_gpu_bench" > "$PERF/gpu_linear.csv" ;;
    prefill)
      need prefill_attention_bench
      say "prefill_attention_bench -> $PERF/gpu_prefill_attention.csv"
      "$BIN/prefill_attention_bench" > "$PERF/gpu_prefill_attention.csv" ;;
    llama8b)
      need llama_gpu_bench
      say "llama_gpu_bench $CONFIG -> $PERF/gpu_llama8b.csv"
      "$BIN/llama_gpu_bench" "$CONFIG" > "$PERF/gpu_llama8b.csv" ;;
    deterministic)
      need llama_gpu_bench
      say "llama_gpu_bench $CONFIG --deterministic -> $PERF/gpu_llama8b_deterministic.csv"
      "$BIN/llama_gpu_bench" "$CONFIG" --deterministic > "$PERF/gpu_llama8b_deterministic.csv" ;;
    engine)
      need engine_bench
      [ -f "$SHARED/tokenizers/llama3.1/tokenizer.json" ] || { say "no Llama 3.1 tokenizer in $SHARED/tokenizers/llama3.1"; exit 1; }
      engine_runs engine_gpu.csv "--async-scheduling off --device-sampling off" "--async-scheduling on --device-sampling off"
      engine_runs engine_gpu_device_sampling.csv "--async-scheduling on --device-sampling off" \
        "--async-scheduling on --device-sampling on" ;;
    mac)
      need mac_cuda_bench
      say "mac_cuda_bench full -> $PERF/mac_gpu.csv"
      "$BIN/mac_cuda_bench" full > "$PERF/mac_gpu.csv"
      if [ -f "$ROOT/scripts/plot_mac_speedup.py" ] && command -v python3 >/dev/null; then
        python3 "$ROOT/scripts/plot_mac_speedup.py" --csv "$PERF/mac_gpu.csv" --out "$PERF/mac_speedup.svg" || true
      fi ;;
    mac_e2e)
      need llama_gpu_bench
      say "llama_gpu_bench $CONFIG mac -> $PERF/mac_gpu_e2e.csv"
      "$BIN/llama_gpu_bench" "$CONFIG" mac > "$PERF/mac_gpu_e2e.csv" ;;
    *)
      echo "usage: scripts/bench_gpu.sh [decode] [linear] [prefill] [llama8b] [deterministic] [engine] [mac] [mac_e2e]" >&2
      exit 2 ;;
  esac
done
