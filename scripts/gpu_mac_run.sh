#!/usr/bin/env bash
# Runs on the lent H200 (device tool; scripts/gpu_mac_pack.sh puts it as run.sh beside pack.tar.xz
# in a carried folder, e.g. build-wt7): the MAC-on-GPU tests, regression GPU tests, macserve
# generate with MAC, and the 8B MAC benchmark; logs and CSVs in $OUT, a summary printed last.
#   OUT=$OUT bash build-wt7/run.sh [tests|bench|kernels|verify|profile|smol|check|final|resolve|paged|grid]
# bench: llama_gpu_bench mac (8B dummy, 128K, full vs forced MAC hit rates).
# verify: mac_kernels_test, cuda_engine_test, cuda_ops_test, the chunk-size tuning sweep, the full
#   kernel grid, cuda_mac_model_test, llama_gpu_bench mac; the logs are re-packed after every step,
#   so a run cut short still returns what it finished.
# kernels: verify, plus cuda_model_test and engine_bench with device greedy sampling on and off.
# profile: ncu per-kernel times of `mac_cuda_bench profile` for each configuration in
#   PROFILE_CONFIGS_STR ("HKV BATCH CONTEXT RATE", ';'-separated).
# smol: SmolLM2 (its parts smol/part.* carried over consecutive calls, joined here) GPU vs CPU MAC.
# check: mac_kernels_test, paged_decode_test, the chunk-rule tuning sweep, then profile.
# resolve: every GPU test of the issue except SmolLM2 (mac_kernels_test, paged_decode_test,
#   cuda_mac_model_test, cuda_engine_test, cuda_ops_test, cuda_model_test), whole (SKIP_PAGED=1: not
#   paged_decode_test, which `paged` runs alone).
# grid: the full kernel grid and the 8B MAC benchmark only.
# final: cuda_mac_model_test, cuda_engine_test, cuda_ops_test, the full kernel grid, the 8B MAC
#   benchmark, then the partial-launch experiments (mac_cuda_bench probe under each switch; not with
#   SKIP_PROBES=1).
# Only a few files come back from $OUT: logs go to $OUT/logs.tgz, the bench CSV beside it.
set -uo pipefail
D=$(cd "$(dirname "$0")" && pwd)
cd "$D/.."
WHAT=${1:-tests}
P=$D/pack
if [ -f "$D/pack.tar.xz" ] && [ ! -f "$P/commit" ]; then mkdir -p "$P" && tar -xJf "$D/pack.tar.xz" -C "$P"; fi
RESULTS=${OUT:-/tmp/gpu-out}
OUT=$(mktemp -d)
SRC=$(cat "$P/source_dir")
if [ ! -e "$SRC" ]; then mkdir -p "$(dirname "$SRC")" && ln -s "$P/src" "$SRC"; fi
CUBLAS_PY=$(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null || true)
export LD_LIBRARY_PATH=$P/lib:/usr/local/cuda/lib64:${CUBLAS_PY}:${LD_LIBRARY_PATH:-}
export MACSERVE_SHARED_DIR=$P/shared
export OMP_NUM_THREADS=16
SMOL=$D/smol/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$SMOL" ] && ls "$D"/smol/part.* >/dev/null 2>&1; then
  cat "$D"/smol/part.* > "$SMOL.tmp"
  if [ "$(stat -c %s "$SMOL.tmp")" = 98362432 ]; then mv "$SMOL.tmp" "$SMOL"; else rm -f "$SMOL.tmp"; fi
fi
[ -f "$SMOL" ] && export MACSERVE_DEFAULT_MODEL=$SMOL
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used --format=csv,noheader | tee "$OUT/gpu.txt"
echo "pack of commit $(cat "$P/commit") (dirty tracked files: $(cat "$P/dirty_files"))" | tee -a "$OUT/gpu.txt"
summary=""
run_test() {  # log name, time limit (s), binary, args...
  local name=$1 limit=$2 bin=$3; shift 3
  local start=$(date +%s)
  timeout "$limit" "$P/bin/$bin" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  summary+="$name rc=$rc $(( $(date +%s) - start ))s: $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$OUT/$name.log" | tr '\n' ' ')\n"
  checkpoint
}
checkpoint() { printf "%b" "$summary" > "$OUT/summary.txt"; tar -czf "$RESULTS/logs.tgz" -C "$OUT" .; }
bench_grid() {  # time limit (s), mac_cuda_bench full's args...: the kernel grid into $RESULTS/mac_gpu.csv
  local limit=$1; shift
  local start=$(date +%s)
  timeout "$limit" "$P/bin/mac_cuda_bench" full "$@" > "$RESULTS/mac_gpu.csv" 2>> "$OUT/mac_bench.err"
  summary+="mac_cuda_bench full rc=$? $(( $(date +%s) - start ))s\n$(grep -E '^[84],[0-9]+,130048' "$RESULTS/mac_gpu.csv")\n"
  checkpoint
}
gen() {  # log name, macserve generate args...
  local name=$1; shift
  local start=$(date +%s)
  MACSERVE_LOG_LEVEL=info timeout 120 "$P/bin/macserve" generate "$@" > "$OUT/$name.txt" 2> "$OUT/$name.err"
  summary+="$name rc=$? $(( $(date +%s) - start ))s: $(head -c 160 "$OUT/$name.txt" | tr '\n' ' ')\n"
  summary+="  $(grep -E 'attention: mac|error|Error|hit rate' "$OUT/$name.err" | cut -c1-300 | tr '\n' ' ')\n"
}
if [ "$WHAT" = tests ]; then
  run_test mac_kernels_test 150 mac_kernels_test
  run_test cuda_mac_model_test 300 cuda_mac_model_test --gtest_filter=-*SmolLM2*
  run_test cuda_ops_test 90 cuda_ops_test
  run_test cuda_model_test 150 cuda_model_test --gtest_filter=-*SmolLM2*
  M=$P/shared/models
  MAC="--attention mac --mac-window 64 --mac-band 16 --mac-min-context 48 --mac-threshold 0.45"
  gen gen_qwen3_cuda --device cuda --gpu-memory-utilization 0.3 --model "$M/tiny-qwen3-bpe" --prompt "Once upon a time" \
    --max-tokens 96 --ignore-eos $MAC --stats-json "$OUT/gen_qwen3_cuda.json"
  gen gen_qwen3_cpu --device cpu --model "$M/tiny-qwen3-bpe" --prompt "Once upon a time" --max-tokens 96 --ignore-eos \
    $MAC --stats-json "$OUT/gen_qwen3_cpu.json"
  gen gen_block32_cuda --device cuda --gpu-memory-utilization 0.3 --model "$M/tiny-qwen3-bpe" --prompt "x" \
    --max-tokens 4 --block-size 32 $MAC
fi
if [ "$WHAT" = resolve ]; then
  run_test mac_kernels_test 200 mac_kernels_test
  run_test cuda_mac_model_test 200 cuda_mac_model_test --gtest_filter=-*SmolLM2*
  run_test cuda_engine_test 150 cuda_engine_test
  run_test cuda_ops_test 60 cuda_ops_test
  run_test cuda_model_test 150 cuda_model_test --gtest_filter=-*SmolLM2*
  [ "${SKIP_PAGED:-0}" = 1 ] || run_test paged_decode_test 300 paged_decode_test
fi
[ "$WHAT" = paged ] && run_test paged_decode_test 500 paged_decode_test
if [ "$WHAT" = grid ]; then
  bench_grid 200
fi
if [ "$WHAT" = check ]; then
  run_test mac_kernels_test 200 mac_kernels_test
  [ "${SKIP_PAGED:-0}" = 1 ] || run_test paged_decode_test 260 paged_decode_test
  start=$(date +%s)
  timeout 120 "$P/bin/mac_cuda_bench" tune > "$RESULTS/mac_gpu_tune.csv" 2> "$OUT/mac_bench.err"
  summary+="mac_cuda_bench tune rc=$? $(( $(date +%s) - start ))s\n$(cat "$RESULTS/mac_gpu_tune.csv")\n"
  checkpoint
fi
if [ "$WHAT" = profile ] || [ "$WHAT" = check ]; then
  # per-kernel times of one MAC step and one full-attention step (Nsight Compute, clocks left alone)
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  IFS=';' read -ra PROFILE_CONFIGS <<< "${PROFILE_CONFIGS_STR:-8 1 130048 0}"
  for cfg in "${PROFILE_CONFIGS[@]}"; do
    name=ncu_$(echo "$cfg" | tr ' .' '__')
    timeout 120 "$NCU" --clock-control none --csv --metrics gpu__time_duration.sum,launch__grid_size,launch__occupancy_limit_shared_mem,launch__registers_per_thread,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active \
      "$P/bin/mac_cuda_bench" profile $cfg > "$OUT/$name.csv" 2> "$OUT/$name.err"
    summary+="ncu $cfg rc=$?\n$(python3 -c '
import csv, sys, re
rows = list(csv.reader(open(sys.argv[1])))
at = [n for n, r in enumerate(rows) if r[:1] == ["ID"]]  # the profiler table (the bench prints its own CSV first)
if not at: sys.exit(0)
h = rows[at[0]]; k, m, v, i = h.index("Kernel Name"), h.index("Metric Name"), h.index("Metric Value"), h.index("ID")
for r in rows[at[0] + 1:]:
    if len(r) < len(h): continue
    name = re.sub(r"\(.*", "", r[k]).split("::")[-1][:40]
    print(r[i], name, r[m], r[v])' "$OUT/$name.csv" 2>&1 | tail -40)\n"
    checkpoint
  done
fi
if [ "$WHAT" = final ]; then
  run_test cuda_mac_model_test 240 cuda_mac_model_test --gtest_filter=-*SmolLM2*
  run_test cuda_engine_test 150 cuda_engine_test
  run_test cuda_ops_test 60 cuda_ops_test
  bench_grid 150
fi
if [ "$WHAT" = kernels ] || [ "$WHAT" = verify ]; then
  run_test mac_kernels_test 150 mac_kernels_test
  run_test cuda_engine_test 150 cuda_engine_test
  run_test cuda_ops_test 90 cuda_ops_test
  start=$(date +%s)
  timeout 90 "$P/bin/mac_cuda_bench" tune > "$RESULTS/mac_gpu_tune.csv" 2> "$OUT/mac_bench.err"
  summary+="mac_cuda_bench tune rc=$? $(( $(date +%s) - start ))s\n$(cat "$RESULTS/mac_gpu_tune.csv")\n"
  checkpoint
  bench_grid 150 "${MAC_WAVES:-0}"
  run_test cuda_mac_model_test 240 cuda_mac_model_test --gtest_filter=-*SmolLM2*
fi
[ "$WHAT" = kernels ] && run_test cuda_model_test 120 cuda_model_test --gtest_filter=-*SmolLM2*
if [ "$WHAT" = tests ] || [ "$WHAT" = bench ] || [ "$WHAT" = kernels ] || [ "$WHAT" = verify ] || [ "$WHAT" = final ] ||
   [ "$WHAT" = grid ]; then
  start=$(date +%s)
  timeout 200 "$P/bin/llama_gpu_bench" "$SRC/configs/llama-3.1-8b" mac > "$OUT/gpu_llama8b_mac.csv" 2> "$OUT/bench_mac.err"
  summary+="llama_gpu_bench mac rc=$? $(( $(date +%s) - start ))s\n$(cat "$OUT/gpu_llama8b_mac.csv" "$OUT/bench_mac.err")\n"
  cp "$OUT/gpu_llama8b_mac.csv" "$RESULTS/"
  checkpoint
fi
if [ "$WHAT" = kernels ] && [ -d "$P/shared/tokenizers/llama3.1" ]; then
  # greedy sampling on the device vs on the host, async scheduling on, the 8B dummy through the engine
  for ds in on off; do
    start=$(date +%s)
    timeout 150 "$P/bin/engine_bench" --model "$SRC/configs/llama-3.1-8b" --load-format dummy --device cuda \
      --tokenizer "$P/shared/tokenizers/llama3.1" --attention full --async-scheduling on --device-sampling $ds \
      --cached-prompts --warm-pass --concurrency 1,16,64 --prompt-len 4096 --max-tokens 128 \
      --csv "$RESULTS/engine_gpu_device_sampling.csv" > "$OUT/engine_bench_ds_$ds.txt" 2>> "$OUT/engine_bench.err"
    summary+="engine_bench 8B dummy device-sampling $ds rc=$? $(( $(date +%s) - start ))s\n$(cat "$OUT/engine_bench_ds_$ds.txt")\n"
    checkpoint
  done
fi
if [ "$WHAT" = final ] && [ "${SKIP_PROBES:-0}" != 1 ]; then
  # partial-kernel launch experiments: persistent vs one CTA per task, carveout max shared vs driver's
  for v in "persistent max" "grid max" "persistent default" "grid default"; do
    set -- $v
    start=$(date +%s)
    MACSERVE_MAC_PARTIAL_LAUNCH=$1 MACSERVE_MAC_PARTIAL_CARVEOUT=$2 timeout 60 "$P/bin/mac_cuda_bench" probe \
      > "$OUT/probe_$1_$2.csv" 2>> "$OUT/mac_bench.err"
    summary+="probe launch=$1 carveout=$2 rc=$? $(( $(date +%s) - start ))s\n$(cat "$OUT/probe_$1_$2.csv")\n"
    checkpoint
  done
fi
if [ "$WHAT" = smol ]; then
  ls -la "$D/smol" | head -12
  run_test cuda_mac_model_test_smol 360 cuda_mac_model_test --gtest_filter=*SmolLM2*
  MAC="--attention mac --mac-min-context 1024 --max-tokens 64 --ignore-eos --max-model-len 4096"
  PROMPT=$(cat "$SRC/tests/fixtures/mac_long_context/kjv.txt")
  gen gen_smol_kjv_cuda --device cuda --gpu-memory-utilization 0.3 --prompt "$PROMPT" $MAC --mac-audit-rate 0.25 \
    --stats-json "$OUT/gen_smol_kjv_cuda.json"
  gen gen_smol_kjv_cpu --device cpu --prompt "$PROMPT" $MAC --mac-audit-rate 0.25 --stats-json "$OUT/gen_smol_kjv_cpu.json"
  run_test cuda_model_test_smol 200 cuda_model_test --gtest_filter=*SmolLM2*
fi
for f in "$OUT"/gen_*_{cpu,cuda}.json; do
  [ -f "$f" ] || continue
  summary+="$(python3 -c '
import json, sys
s = json.load(open(sys.argv[1])); m = s.get("mac", {})
print(sys.argv[1].split("/")[-1], "tokens", len(s.get("completion_ids", [])), "hit", m.get("hit_heads"), "/", m.get("heads"),
      "eligible", m.get("eligible_heads"), "kv", m.get("kv_bytes_read"), "/", m.get("kv_bytes_full"),
      "audit", [round(x, 4) for x in m.get("layer_audit_rel_l2", [])],
      "ids", s.get("completion_ids", [])[:64])' "$f" 2>&1)\n"
done
echo "================ details"
for f in "$OUT"/*.log; do grep -E '^(tiny|SmolLM2|  flip|  step|  per-layer|.*audit rel|.*sequence [0-9]|.*replayed|startup error|e[0-9]|.*: tokens equal|single|defaults|traj|all-miss|graph|batch|prefill|forced|.*Failure|Expected|Which is|  Actual)' "$f" | cut -c1-600 | head -60; done
tar -czf "$RESULTS/logs.tgz" -C "$OUT" .
echo "================ summary"
printf "%b" "$summary"
