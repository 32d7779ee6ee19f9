#!/usr/bin/env bash
# Long prompts through `macserve serve` on the GPU (issue 19's end-to-end figures), with
# macserve-bench. For each chunk size of CHUNKS (--max-num-batched-tokens) it starts a server on the
# Llama-3.1-8B-shaped dummy model and measures
#   - (first chunk size only) the TTFT of one prompt of each length of TTFT_LENS (32 output tokens,
#     concurrency 1), then 8 concurrent prompts of 32K;
#   - decode under a long prefill: BG_CONC streams of 1024-token prompts decoding BG_OUT tokens,
#     alone, then again with one 32K prompt sent LONG_DELAY s after they start: the streams'
#     inter-token latency (p50 / p99 / max) with and without it, and the 32K prompt's TTFT.
# Results (vLLM-format JSONs, server logs) under OUT_DIR/chunk-N/, and OUT_DIR/summary.csv:
#   chunk,what,prompt_tokens,ttft_ms,itl_p50_ms,itl_p99_ms,itl_max_ms
# Environment: MACSERVE, BENCH (build/bin/macserve, macserve-bench), MODEL_DIR
# (configs/llama-3.1-8b), TOKENIZER (../shared/tokenizers/llama3.1), OUT_DIR
# (docs/perf/serving/long-prefill), CHUNKS ("2048 4096 8192 16384"), TTFT_LENS ("4096 16384 32768
# 65536 130048": Llama 3.1 allows 131,072 positions, prompt and output together), BG_CONC (4),
# BG_OUT (1024), LONG_DELAY (3), PORT (8000), SERVER_ARGS (more `macserve serve` flags, e.g.
# "--attention full").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MACSERVE=${MACSERVE:-$ROOT/build/bin/macserve}
BENCH=${BENCH:-$ROOT/build/bin/macserve-bench}
MODEL_DIR=${MODEL_DIR:-$ROOT/configs/llama-3.1-8b}
TOKENIZER=${TOKENIZER:-$ROOT/../shared/tokenizers/llama3.1}
OUT_DIR=${OUT_DIR:-$ROOT/docs/perf/serving/long-prefill}
CHUNKS=${CHUNKS:-2048 4096 8192 16384}
TTFT_LENS=${TTFT_LENS:-4096 16384 32768 65536 130048}
BG_CONC=${BG_CONC:-4}
BG_OUT=${BG_OUT:-1024}
LONG_DELAY=${LONG_DELAY:-3}
PORT=${PORT:-8000}
SERVER_ARGS=${SERVER_ARGS:-}
URL=http://127.0.0.1:$PORT
for b in "$MACSERVE" "$BENCH"; do
  [ -x "$b" ] || { echo "bench_long_prefill: $b not found (build with CUDA first)" >&2; exit 1; }
done
mkdir -p "$OUT_DIR"

seed=100
bench() {  # bench DIR NAME ARGS...: one macserve-bench run, result DIR/NAME.json
  local dir=$1 name=$2
  shift 2
  seed=$((seed + 1))  # fresh prompts each run: the prefix cache must not answer them
  "$BENCH" --base-url "$URL" --tokenizer "$TOKENIZER" --dataset-name random --ignore-eos \
    --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,99 --disable-tqdm \
    --save-result --result-dir "$dir" --result-filename "$name.json" --seed "$seed" "$@" \
    >>"$dir/bench.log" 2>&1
}

server_pid=
stop_server() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null; server_pid=; }
trap stop_server EXIT

first=1
for chunk in $CHUNKS; do
  dir=$OUT_DIR/chunk-$chunk
  mkdir -p "$dir"
  : >"$dir/bench.log"
  # shellcheck disable=SC2086  # SERVER_ARGS is a list of flags
  "$MACSERVE" serve --device cuda --load-format dummy --model "$MODEL_DIR" --tokenizer "$TOKENIZER" \
    --port "$PORT" --no-grpc --max-model-len 131072 --max-num-batched-tokens "$chunk" $SERVER_ARGS \
    >"$dir/server.log" 2>&1 &
  server_pid=$!
  up=0
  for _ in $(seq 600); do
    if python3 -c "import urllib.request; urllib.request.urlopen('$URL/health', timeout=1)" 2>/dev/null; then
      up=1
      break
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.5
  done
  ((up)) || { echo "bench_long_prefill: the server did not come up ($dir/server.log)" >&2; exit 1; }
  bench "$dir" warmup --random-input-len 1024 --random-output-len 8 --num-prompts 2
  if ((first)); then
    for len in $TTFT_LENS; do
      bench "$dir" "ttft-$len" --random-input-len "$len" --random-output-len 32 --num-prompts 1
    done
    bench "$dir" "concurrent-8x32768" --random-input-len 32768 --random-output-len 32 --num-prompts 8 \
      --max-concurrency 8
    first=0
  fi
  bench "$dir" decode-alone --random-input-len 1024 --random-output-len "$BG_OUT" \
    --num-prompts "$BG_CONC" --max-concurrency "$BG_CONC"
  bench "$dir" decode-beside-32k --random-input-len 1024 --random-output-len "$BG_OUT" \
    --num-prompts "$BG_CONC" --max-concurrency "$BG_CONC" &
  bg=$!
  sleep "$LONG_DELAY"
  bench "$dir" long-32k --random-input-len 32768 --random-output-len 32 --num-prompts 1
  wait "$bg"
  stop_server
done

python3 - "$OUT_DIR" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
rows = ["chunk,what,prompt_tokens,ttft_ms,itl_p50_ms,itl_p99_ms,itl_max_ms"]
def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))] if xs else float("nan")
for d in sorted(glob.glob(os.path.join(out, "chunk-*")), key=lambda p: int(p.rsplit("-", 1)[1])):
    chunk = d.rsplit("-", 1)[1]
    for f in sorted(glob.glob(os.path.join(d, "*.json"))):
        name = os.path.basename(f)[:-5]
        if name == "warmup":
            continue
        r = json.load(open(f))
        itls = [x * 1e3 for per in r.get("itls", []) for x in per]
        ttfts = [x * 1e3 for x in r.get("ttfts", [])]
        lens = r.get("input_lens", [0])
        rows.append(f"{chunk},{name},{max(lens)},{pct(ttfts, 50):.1f},{pct(itls, 50):.2f},"
                    f"{pct(itls, 99):.2f},{max(itls) if itls else float('nan'):.2f}")
open(os.path.join(out, "summary.csv"), "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
PY
