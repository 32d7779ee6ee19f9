#!/usr/bin/env bash
# The standard serving benchmark set, run with macserve-bench against a server that is already
# running (any OpenAI-compatible server: macserve, vLLM, SGLang), results as JSON under $OUT_DIR and
# a markdown table of them on stdout (and in $OUT_DIR/table.md). Reports only; nothing gates on it.
#
#   1. random $RANDOM_IN/$RANDOM_OUT tokens (--ignore-eos) at each concurrency of $CONCURRENCY
#   2. the ShareGPT sample at each request rate of $SHAREGPT_RATES
#   3. random $LONG_IN/$LONG_OUT at each concurrency of $LONG_CONCURRENCY (SKIP_LONG=1 skips)
#   4. needle in a haystack ($NEEDLE_IN tokens): long-context accuracy (SKIP_NEEDLE=1 skips)
#   5. the client's own overhead (loopback probe server, not a model)
#
#   TOKENIZER=../shared/tokenizers/llama3.1 scripts/bench_serve.sh                 # the H200 set
#   BASE_URL=http://127.0.0.1:8000 TOKENIZER=../shared/models/tiny-qwen2-bpe RANDOM_IN=128 RANDOM_OUT=32 \
#     CONCURRENCY=1,4,16 SHAREGPT_OUT=32 LONG_IN=900 LONG_OUT=32 LONG_CONCURRENCY=1,4 NEEDLE_IN=900 \
#     scripts/bench_serve.sh                                                        # CPU, tiny model
#
# env: BASE_URL (http://127.0.0.1:8000), TOKENIZER (required: the served model's directory,
# tokenizer file or .gguf), MODEL (default: the server's first), BENCH (build/bin/macserve-bench),
# BACKEND (openai), OUT_DIR (docs/perf/serving), NUM_PROMPTS (per point; default 10 x concurrency,
# at least 16; for the long sweep 1 x concurrency, at least 2), SHAREGPT
# (../shared/data/sharegpt_format_sample.json), SHAREGPT_PROMPTS (100),
# SHAREGPT_OUT (fixed output length; default each reply's), LABEL, EXTRA (more macserve-bench flags),
# COMMIT (recorded in each result; default the checkout's), SEED (the first run's seed, 0).
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH=${BENCH:-build/bin/macserve-bench}
BASE_URL=${BASE_URL:-http://127.0.0.1:8000}
: "${TOKENIZER:?set TOKENIZER to the served model directory, its tokenizer.json/.model or a .gguf}"
BACKEND=${BACKEND:-openai}
OUT_DIR=${OUT_DIR:-docs/perf/serving}
RANDOM_IN=${RANDOM_IN:-1024}
RANDOM_OUT=${RANDOM_OUT:-128}
CONCURRENCY=${CONCURRENCY:-1,16,64}
SHAREGPT=${SHAREGPT:-../shared/data/sharegpt_format_sample.json}
SHAREGPT_RATES=${SHAREGPT_RATES:-4,16,inf}
SHAREGPT_PROMPTS=${SHAREGPT_PROMPTS:-100}
SHAREGPT_OUT=${SHAREGPT_OUT:-}
LONG_IN=${LONG_IN:-32768}
LONG_OUT=${LONG_OUT:-256}
LONG_CONCURRENCY=${LONG_CONCURRENCY:-1,8}
NEEDLE_IN=${NEEDLE_IN:-8192}
LABEL=${LABEL:-}
EXTRA=${EXTRA:-}

[ -x "$BENCH" ] || { echo "bench_serve: no macserve-bench at $BENCH (ninja -C build macserve-bench)" >&2; exit 1; }
mkdir -p "$OUT_DIR"
common=(--backend "$BACKEND" --base-url "$BASE_URL" --tokenizer "$TOKENIZER" --save-result --result-dir "$OUT_DIR"
        --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,99 --disable-tqdm)
[ -n "${MODEL:-}" ] && common+=(--model "$MODEL")
[ -n "$LABEL" ] && common+=(--label "$LABEL")
commit=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
common+=(--metadata "commit=$commit" "load_before=$(cut -d' ' -f1 /proc/loadavg)")
log="$OUT_DIR/bench_serve.log"
: >"$log"

# Each run gets its own seed (SEED, SEED+1, ...): with one seed every run would send the prompts of
# the run before it again, and the server's prefix cache would answer them without prefill.
seed=${SEED:-0}
run() {  # run NAME ARGS...: one macserve-bench invocation, its command line kept in the log
  local name=$1
  shift
  set -- "$@" --seed "$seed"
  seed=$((seed + 1))
  echo "== $name: $BENCH ${common[*]} $* $EXTRA" | tee -a "$log"
  # shellcheck disable=SC2086
  "$BENCH" "${common[@]}" "$@" $EXTRA 2>>"$log" | tee -a "$log"
}

# random_sweep IN OUT CONCURRENCIES PROMPTS_PER_CONC MIN_PROMPTS WARMUPS: the random dataset at
# each concurrency of the comma list, NUM_PROMPTS (or PER x concurrency, at least MIN) prompts each.
random_sweep() {
  local in=$1 out=$2 per=$4 min=$5 warmups=$6 c n cs
  IFS=, read -r -a cs <<<"$3"
  for c in "${cs[@]}"; do
    n=${NUM_PROMPTS:-$((c * per > min ? c * per : min))}
    run "random ${in}/${out} c$c" --dataset-name random --random-input-len "$in" \
      --random-output-len "$out" --ignore-eos --num-prompts "$n" --max-concurrency "$c" \
      --num-warmups "$warmups" --result-filename "random-${in}-${out}-c$c.json"
  done
}

random_sweep "$RANDOM_IN" "$RANDOM_OUT" "$CONCURRENCY" 10 16 2

sharegpt_out=()
[ -n "$SHAREGPT_OUT" ] && sharegpt_out=(--sharegpt-output-len "$SHAREGPT_OUT")
run "sharegpt rates $SHAREGPT_RATES" --dataset-name sharegpt --dataset-path "$SHAREGPT" \
  --num-prompts "$SHAREGPT_PROMPTS" --request-rate "$SHAREGPT_RATES" "${sharegpt_out[@]}" \
  --num-warmups 2 --result-filename "sharegpt.json"

# One long prompt per concurrency slot and no warm-up (the server is warm by now): a 32K prefill
# takes seconds, and the point is the prefill queueing and the decode at long context.
[ "${SKIP_LONG:-0}" = 1 ] || random_sweep "$LONG_IN" "$LONG_OUT" "$LONG_CONCURRENCY" 1 2 0

if [ "${SKIP_NEEDLE:-0}" != 1 ]; then
  run "long-context needle $NEEDLE_IN" --dataset-name long-context --long-context-input-len "$NEEDLE_IN" \
    --num-prompts 8 --max-concurrency 4 --num-warmups 2 --result-filename "needle-${NEEDLE_IN}.json"
fi

echo "== client overhead" | tee -a "$log"
"$BENCH" --measure-client-overhead | tee "$OUT_DIR/client_overhead.txt" | tee -a "$log"

python3 - "$OUT_DIR" <<'PY' | tee "$OUT_DIR/table.md"
import glob, json, os, sys
rows = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    r = json.load(open(path))
    if "completed" not in r:
        continue
    sm = r.get("server_metrics") or {}
    def f(k, fmt="{:.1f}"):
        v = r.get(k)
        return fmt.format(v) if isinstance(v, (int, float)) else "-"
    acc = r.get("long_context_accuracy")
    rows.append("| {} | {} | {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
        os.path.basename(path), r.get("max_concurrency") or "-", r.get("request_rate"), r["completed"],
        r["completed"] + r["failed"], f("request_throughput", "{:.2f}"), f("output_throughput"),
        f("median_ttft_ms"), f("p99_ttft_ms"), f("median_tpot_ms", "{:.2f}"), f("median_itl_ms", "{:.2f}"),
        f("median_e2el_ms"), "-" if acc is None else "{:.2f}".format(acc)))
print("| result | max conc | rate | ok | req/s | out tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | ITL p50 ms | E2EL p50 ms | needle acc |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
print("\n".join(rows))
PY
