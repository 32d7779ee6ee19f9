#!/usr/bin/env bash
# HTTP front-end benchmark (goal S2 in ../shared/docs/performance.md: >= 2,000 req/s of a 1-token
# completion on a tiny model, 2 cores, 64 concurrent clients). Starts `macserve serve` on the tiny
# model, drives it with wrk (a Lua script POSTs 1-token requests), prints requests/s and latency
# percentiles, and appends one CSV row per endpoint. Reports only; nothing gates on it.
#
#   scripts/bench_http.sh                        # completions and chat, 64 connections, 30 s
#   ENDPOINTS=completions DURATION=10 scripts/bench_http.sh
#
# env: MACSERVE_BIN (build/bin/macserve), MODEL (../shared/models/tiny-qwen2-bpe), ENDPOINTS
# ("completions chat"), CONNECTIONS (64), DURATION (seconds, 30), WRK_THREADS (1), CSV
# (docs/perf/http.csv; empty: no CSV), SERVER_ARGS (extra serve flags), OMP_NUM_THREADS (1: wrk
# shares the 2 cores, and OpenMP barriers stall when a thread is descheduled; see docs/perf/cpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${MACSERVE_BIN:-build/bin/macserve}
MODEL=${MODEL:-../shared/models/tiny-qwen2-bpe}
ENDPOINTS=${ENDPOINTS:-completions chat}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-30}
WRK_THREADS=${WRK_THREADS:-1}
CSV=${CSV-docs/perf/http.csv}
SERVER_ARGS=${SERVER_ARGS:-}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
NAME=bench

command -v wrk >/dev/null || { echo "bench_http: wrk not found (scripts/install_deps.sh installs it)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "bench_http: no server binary at $BIN (scripts/build.sh)" >&2; exit 1; }
[ -e "$MODEL" ] || { echo "bench_http: no model at $MODEL" >&2; exit 1; }

# http_ok URL [JSON_BODY]: true when a GET (or a POST of the body) answers 2xx.
http_ok() {
  python3 - "$@" <<'PY' >/dev/null 2>&1
import sys, urllib.request
data = sys.argv[2].encode() if len(sys.argv) > 2 else None
req = urllib.request.Request(sys.argv[1], data=data, headers={"Content-Type": "application/json"})
urllib.request.urlopen(req, timeout=30).read()
PY
}

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"; wait "$server_pid" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck disable=SC2086
"$BIN" serve --model "$MODEL" --served-model-name "$NAME" --host 127.0.0.1 --port 0 \
  --port-file "$work/port" --max-num-seqs "$CONNECTIONS" $SERVER_ARGS >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 600); do
  if [ -s "$work/port" ] && http_ok "http://127.0.0.1:$(cat "$work/port")/health"; then break; fi
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
port=$(cat "$work/port")
url="http://127.0.0.1:$port"

commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- engine server kernels models 2>/dev/null || commit="$commit-dirty"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//; s/,/ /g')
if [ -n "$CSV" ] && [ ! -s "$CSV" ]; then
  echo "date,commit,endpoint,connections,wrk_threads,duration_s,omp_threads,requests,req_per_s,lat_mean_ms,lat_p50_ms,lat_p90_ms,lat_p99_ms,lat_max_ms,non_2xx,socket_errors,load_before,cpu,server_args" >"$CSV"
fi

for ep in $ENDPOINTS; do
  case "$ep" in
    completions) path=/v1/completions
      body="{\"model\":\"$NAME\",\"prompt\":\"The\",\"max_tokens\":1,\"temperature\":0}" ;;
    chat) path=/v1/chat/completions
      body="{\"model\":\"$NAME\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":1,\"temperature\":0}" ;;
    *) echo "bench_http: unknown endpoint $ep" >&2; exit 1 ;;
  esac
  # One check request first: a benchmark of error responses would be meaningless.
  http_ok "$url$path" "$body" || { echo "bench_http: $path check request failed" >&2; tail -20 "$work/server.log" >&2; exit 1; }
  cat >"$work/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %.6f %.3f %.3f %.3f %.3f %.3f %d %d\n",
    summary.requests, summary.duration / 1e6, latency.mean / 1e3, latency:percentile(50) / 1e3,
    latency:percentile(90) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
    e.status, e.connect + e.read + e.write + e.timeout))
end
EOF
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "== $path: wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s (server OMP_NUM_THREADS=$OMP_NUM_THREADS, load $load)"
  wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$work/post.lua" "$url$path" | tee "$work/wrk.out"
  read -r _ reqs secs mean p50 p90 p99 max non2xx sockerr < <(grep '^RESULT' "$work/wrk.out")
  rps=$(awk -v r="$reqs" -v s="$secs" 'BEGIN { printf "%.1f", r / s }')
  echo "$path: $rps req/s, latency mean $mean ms, p50 $p50 ms, p90 $p90 ms, p99 $p99 ms, max $max ms," \
       "non-2xx $non2xx, socket errors $sockerr"
  if [ -n "$CSV" ]; then
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ),$commit,$ep,$CONNECTIONS,$WRK_THREADS,$DURATION,$OMP_NUM_THREADS,$reqs,$rps,$mean,$p50,$p90,$p99,$max,$non2xx,$sockerr,$load,$cpu,$SERVER_ARGS" >>"$CSV"
  fi
done
