#!/usr/bin/env bash
# Bundles a build's GPU tests (and with --bench the GPU benchmarks) for a GPU machine that has no
# source tree: on a GPU machine with the checkout, run `ctest -L gpu` and scripts/bench_gpu.sh
# instead. DEST receives
#   bundle.tar.xz  the binaries of every ctest test labelled gpu (stripped), their shared libraries
#                  outside the system and the CUDA toolkit (the target's own CUDA is used), the test
#                  data they read (tiny models and goldens of ../shared, tests/fixtures), and with
#                  --bench the benchmark binaries, scripts/bench_gpu.sh, configs/llama-3.1-8b and
#                  the Llama 3.1 tokenizer
#   run.sh         `bash DEST/run.sh OUT [tests|bench|all]` (default tests) on the GPU machine:
#                  unpacks the bundle beside itself, runs each test binary (then bench_gpu.sh), and
#                  leaves OUT/summary.txt (one line per binary: exit code, time, gtest totals) and
#                  OUT/results.tgz (logs, gtest XML, the benchmark CSVs), rewritten after each step
#                  so that a run cut short still returns what it finished; `run.sh OUT serve`
#                  (bundles made with --serve) starts `macserve serve` on the Llama-3.1-8B-shaped
#                  dummy model once per attention mode of SERVE_ATTENTION (default "full mac") and
#                  runs scripts/bench_serve.sh against it (SERVE_ENV: its settings, e.g.
#                  "SKIP_NEEDLE=1"), results under OUT/serving/MODE/
#   smollm2/       with --smollm2: the default model (SmolLM2 GGUF, 98 MB) in 24 MiB parts, joined by
#                  run.sh once all are there (checked against its SHA-256); without them the
#                  SmolLM2 tests skip
# Carrying it with the device tool (at most 64 MiB per call, the checkout included; a warm machine
# keeps what earlier calls carried): make DEST an ignored folder of the checkout, carry
# DEST/bundle.tar.xz and DEST/run.sh, then the parts of DEST/smollm2 two per call.
#   scripts/gpu_bundle.sh [--bench] [--serve] [--smollm2] BUILD_DIR DEST
# Data paths resolve as the tests resolve them: MACSERVE_SHARED_DIR, else ../shared beside the
# source tree the build was configured from; MACSERVE_DEFAULT_MODEL, else
# ~/.cache/macserve/models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch_default_model.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=0 SERVE=0 SMOL=0
while [ $# -gt 0 ]; do
  case $1 in
    --bench) BENCH=1; shift ;;
    --serve) SERVE=1; shift ;;
    --smollm2) SMOL=1; shift ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
[ $# -eq 2 ] || { echo "usage: scripts/gpu_bundle.sh [--bench] [--serve] [--smollm2] BUILD_DIR DEST" >&2; exit 2; }
B=$(cd "$1" && pwd)
DEST=$2
[ -f "$B/CMakeCache.txt" ] || { echo "gpu_bundle: $B is not a CMake build directory" >&2; exit 1; }
SRC=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$B/CMakeCache.txt")
SHARED=${MACSERVE_SHARED_DIR:-$SRC/../shared}
MODEL=${MACSERVE_DEFAULT_MODEL:-${HOME:-.}/.cache/macserve/models/SmolLM2-135M-Instruct.Q4_1.gguf}

# The GPU tests: every executable that ctest runs under the label gpu.
mapfile -t TESTS < <(ctest --test-dir "$B" -L gpu --show-only=json-v1 | python3 -c '
import json, os, sys
seen = []
for t in json.load(sys.stdin)["tests"]:
    exe = t.get("command", [None])[0]
    if exe and os.path.basename(exe) not in seen: seen.append(os.path.basename(exe))
print("\n".join(seen))')
((${#TESTS[@]})) && [ -n "${TESTS[0]}" ] || { echo "gpu_bundle: no tests labelled gpu in $B (built without CUDA?)" >&2; exit 1; }
BENCHES=()
((BENCH)) && BENCHES=(decode_bench linear_gpu_bench prefill_attention_bench llama_gpu_bench mac_cuda_bench engine_bench)
((SERVE)) && BENCHES+=(macserve macserve-bench)

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/lib" "$STAGE/shared/models" "$STAGE/tests"
for b in "${TESTS[@]}" "${BENCHES[@]}"; do
  [ -x "$B/bin/$b" ] || { echo "gpu_bundle: $B/bin/$b not built" >&2; exit 1; }
  cp "$B/bin/$b" "$STAGE/bin/" && strip "$STAGE/bin/$b"
done
printf '%s\n' "${TESTS[@]}" > "$STAGE/tests.txt"
# Shared libraries besides libc/libstdc++ and CUDA's (the GPU machine's toolkit provides those).
for b in "${TESTS[@]}" "${BENCHES[@]}"; do ldd "$B/bin/$b"; done | awk '/=> \//{print $3}' | sort -u |
  { grep -v -E '/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|ld-linux[^/]*)\.so|/libcuda\.so|/usr/local/cuda|libcudart|libcublas' || true; } |
  while read -r lib; do cp -L "$lib" "$STAGE/lib/"; done
# Test data, laid out as under ../shared and tests/fixtures.
for m in tiny-llama-sp tiny-qwen2-bpe tiny-qwen3-bpe; do
  mkdir -p "$STAGE/shared/models/$m"
  find "$SHARED/models/$m" -maxdepth 1 -type f \( -name '*.json' -o -name '*.safetensors' -o -name 'tokenizer.model' \) \
    -exec cp {} "$STAGE/shared/models/$m/" \;
done
cp "$SHARED/models/golden.json" "$STAGE/shared/models/"
cp -r "$SRC/tests/fixtures" "$STAGE/tests/"
if ((BENCH || SERVE)); then
  mkdir -p "$STAGE/scripts" "$STAGE/configs" "$STAGE/shared/tokenizers/llama3.1" "$STAGE/shared/data"
  ((BENCH)) && cp "$ROOT/scripts/bench_gpu.sh" "$STAGE/scripts/"
  ((SERVE)) && cp "$ROOT/scripts/bench_serve.sh" "$STAGE/scripts/" && cp "$SHARED/data/sharegpt_format_sample.json" "$STAGE/shared/data/"
  cp -r "$SRC/configs/llama-3.1-8b" "$STAGE/configs/"
  cp "$SHARED/tokenizers/llama3.1"/*.json "$STAGE/shared/tokenizers/llama3.1/"
fi
git -C "$SRC" describe --always --dirty > "$STAGE/commit" 2>/dev/null || echo unknown > "$STAGE/commit"

mkdir -p "$DEST"
tar -cf - -C "$STAGE" . | xz -T2 -6 > "$DEST/bundle.tar.xz"
if ((SMOL)); then
  [ -f "$MODEL" ] || { echo "gpu_bundle: --smollm2: $MODEL not found (scripts/fetch_default_model.sh)" >&2; exit 1; }
  rm -rf "$DEST/smollm2" && mkdir -p "$DEST/smollm2"
  split -b 24M "$MODEL" "$DEST/smollm2/part."
  (cd "$(dirname "$MODEL")" && sha256sum "$(basename "$MODEL")") > "$DEST/smollm2/SHA256SUMS"
fi

cat > "$DEST/run.sh" <<'RUN'
#!/usr/bin/env bash
# Made by scripts/gpu_bundle.sh: runs the bundled GPU tests and/or benchmarks.
#   bash run.sh OUT [tests|bench|all]
set -uo pipefail
D=$(cd "$(dirname "$0")" && pwd)
RESULTS=${1:?usage: run.sh OUT [tests|bench|all]}
WHAT=${2:-tests}
mkdir -p "$RESULTS"
P=$D/bundle
if [ ! -f "$P/.unpacked" ] || [ "$D/bundle.tar.xz" -nt "$P/.unpacked" ]; then
  rm -rf "$P" && mkdir -p "$P" && tar -xJf "$D/bundle.tar.xz" -C "$P" && touch "$P/.unpacked" || exit 1
fi
if [ -f "$D/smollm2/SHA256SUMS" ] && ! (cd "$D/smollm2" && sha256sum -c --status SHA256SUMS 2>/dev/null); then
  name=$(awk '{print $2}' "$D/smollm2/SHA256SUMS")
  cat "$D"/smollm2/part.* > "$D/smollm2/$name" 2>/dev/null
  (cd "$D/smollm2" && sha256sum -c --status SHA256SUMS) || rm -f "$D/smollm2/$name"
fi
if [ -f "$D/smollm2/SHA256SUMS" ]; then
  name=$(awk '{print $2}' "$D/smollm2/SHA256SUMS")
  [ -f "$D/smollm2/$name" ] && export MACSERVE_DEFAULT_MODEL=$D/smollm2/$name
fi
# CUDA's libraries from the machine's toolkit (or from pip's nvidia-cublas where the toolkit has none).
CUBLAS_PY=$(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null || true)
export LD_LIBRARY_PATH=$P/lib:/usr/local/cuda/lib64${CUBLAS_PY:+:$CUBLAS_PY}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export MACSERVE_SHARED_DIR=$P/shared MACSERVE_FIXTURES_DIR=$P/tests/fixtures
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
{ command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
  echo "bundle of $(cat "$P/commit"); SmolLM2: ${MACSERVE_DEFAULT_MODEL:-absent (its tests skip)}"; } > "$W/summary.txt"
checkpoint() { cp "$W/summary.txt" "$RESULTS/"; tar -czf "$RESULTS/results.tgz" -C "$W" .; }
if [ "$WHAT" = tests ] || [ "$WHAT" = all ]; then
  while read -r t; do
    start=$(date +%s)
    timeout "${MACSERVE_TEST_TIMEOUT:-900}" "$P/bin/$t" --gtest_output="xml:$W/$t.xml" > "$W/$t.log" 2>&1
    rc=$?
    echo "$t rc=$rc $(($(date +%s) - start))s $(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ tests?' "$W/$t.log" | tr '\n' ' ')" >> "$W/summary.txt"
    checkpoint
  done < "$P/tests.txt"
fi
if [ "$WHAT" = bench ] || [ "$WHAT" = all ]; then
  if [ -x "$P/scripts/bench_gpu.sh" ]; then
    BIN_DIR=$P/bin PERF_DIR=$W/perf CONFIG_DIR=$P/configs/llama-3.1-8b "$P/scripts/bench_gpu.sh" > "$W/bench.log" 2>&1
    echo "bench_gpu.sh rc=$? (CSVs in results.tgz: perf/)" >> "$W/summary.txt"
  else
    echo "bench: not in this bundle (made without --bench)" >> "$W/summary.txt"
  fi
fi
if [ "$WHAT" = serve ]; then
  if [ -x "$P/bin/macserve" ] && [ -x "$P/scripts/bench_serve.sh" ]; then
    for mode in ${SERVE_ATTENTION:-full mac}; do
      S=$RESULTS/serving/$mode  # straight under OUT: a run cut short keeps the points it finished
      mkdir -p "$S"
      "$P/bin/macserve" serve --device cuda --load-format dummy --model "$P/configs/llama-3.1-8b" \
        --tokenizer "$P/shared/tokenizers/llama3.1" --attention "$mode" --port 8000 --no-grpc > "$S/server.log" 2>&1 &
      pid=$!
      up=0
      for _ in $(seq 600); do
        if python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:8000/health", timeout=1)' 2>/dev/null; then
          up=1; break
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
      done
      if ((up)); then
        # shellcheck disable=SC2086  # SERVE_ENV is a list of NAME=value words
        env TOKENIZER="$P/shared/tokenizers/llama3.1" BENCH="$P/bin/macserve-bench" OUT_DIR="$S" LABEL="$mode" \
          SHAREGPT="$P/shared/data/sharegpt_format_sample.json" COMMIT="$(cat "$P/commit")" ${SERVE_ENV:-} \
          "$P/scripts/bench_serve.sh" > "$S/bench.log" 2>&1
        echo "serve $mode: bench_serve.sh rc=$?" >> "$W/summary.txt"
        python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:8000/metrics").read().decode())' > "$S/metrics.txt" 2>&1
      else
        echo "serve $mode: the server did not come up ($S/server.log)" >> "$W/summary.txt"
      fi
      kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
      checkpoint
    done
  else
    echo "serve: not in this bundle (made without --serve)" >> "$W/summary.txt"
  fi
fi
checkpoint
cat "$W/summary.txt"
RUN
chmod +x "$DEST/run.sh"
du -sh "$DEST/bundle.tar.xz" "$DEST/smollm2" 2>/dev/null || true
