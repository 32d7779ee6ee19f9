#!/usr/bin/env bash
# Style checks (docs/style.md, "Tooling"); scripts/test.sh runs `format` and `tidy` after ctest.
#   scripts/check_style.sh format   clang-format --dry-run -Werror over every tracked C++/CUDA source
#                                   (.clang-format); fails on the first difference, listing the files
#   scripts/check_style.sh fix      applies clang-format to the same files in place
#   scripts/check_style.sh tidy     clang-tidy (.clang-tidy) on the library sources (the .cc files of
#                                   core, kernels, backend, tokenizer, models, engine, server; not
#                                   tests, not the .cu files nvcc compiles), JOBS at a time (nproc),
#                                   through ${BUILD_DIR:-build}/compile_commands.json (scripts/build.sh
#                                   makes it); fails on any finding
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-format}
JOBS=${JOBS:-$(nproc)}
CLANG_FORMAT=${CLANG_FORMAT:-clang-format}
CLANG_TIDY=${CLANG_TIDY:-clang-tidy}
BUILD_DIR=${BUILD_DIR:-build}
LIB_DIRS=(core kernels backend tokenizer models engine server)

sources() { git ls-files -z -- '*.h' '*.cc' '*.cu' '*.cuh'; }

case $MODE in
  format)
    bad=$({ sources | xargs -0 -r -n 32 -P "$JOBS" "$CLANG_FORMAT" --dry-run -Werror 2>&1 || true; } |
      sed -n 's/^\([^:]*\):[0-9]*:[0-9]*: error: code should be clang-formatted.*/\1/p' | sort -u)
    if [ -n "$bad" ]; then
      echo "$bad"
      echo "check_style: $(echo "$bad" | wc -l) files differ from clang-format (scripts/check_style.sh fix)" >&2
      exit 1
    fi
    echo "check_style: format ok ($(sources | tr -cd '\0' | wc -c) files)" ;;
  fix)
    sources | xargs -0 -r -n 32 -P "$JOBS" "$CLANG_FORMAT" -i ;;
  tidy)
    db=$BUILD_DIR/compile_commands.json
    [ -f "$db" ] || { echo "check_style: $db missing: configure first (scripts/build.sh)" >&2; exit 1; }
    mapfile -t files < <(python3 - "$db" "$PWD" "${LIB_DIRS[@]}" <<'EOF'
import json, os, sys
db, root, dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
seen = set()
for e in json.load(open(db)):
    f = os.path.normpath(os.path.join(e["directory"], e["file"]))
    rel = os.path.relpath(f, root)
    if rel.split(os.sep)[0] in dirs and rel.endswith(".cc") and rel not in seen:
        seen.add(rel)
        print(rel)
EOF
    )
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    start=$(date +%s)
    rc=0
    printf '%s\n' "${files[@]}" |
      xargs -r -n 1 -P "$JOBS" "$CLANG_TIDY" -p "$BUILD_DIR" --quiet > "$log" 2>&1 || rc=$?
    # Each header's findings come once per file that includes it: print each once. (grep finds
    # nothing on a clean run and exits 1: `|| true`, or set -e would end the script there.)
    findings=$({ grep -E '^[^ ].*: (warning|error): ' "$log" || true; } | sort -u -t: -k1,3 |
      sort -t: -k1,1 -k2,2n)
    [ -z "$findings" ] || echo "$findings"
    n=$(printf '%s' "$findings" | grep -c '' || true)
    echo "check_style: tidy: ${#files[@]} files, $n findings, $(($(date +%s) - start)) s on $JOBS jobs" >&2
    if [ "$rc" -ne 0 ] || [ "$n" -ne 0 ]; then
      [ "$n" -ne 0 ] || grep -v ' warnings\? generated\.$' "$log" | head -40 >&2
      exit 1
    fi ;;
  *)
    echo "usage: scripts/check_style.sh [format|tidy|fix]" >&2
    exit 2 ;;
esac
