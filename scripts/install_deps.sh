#!/usr/bin/env bash
# Installs every Debian and PyPI package macserve's build and tests need. Idempotent and quiet:
# packages already present are skipped, so a second run takes a second.
set -euo pipefail

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config git xz-utils unzip
  libopenblas-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev
  libsentencepiece-dev libpcre2-dev libutf8proc-dev
  libboost-dev prometheus-cpp-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev clang-format clang-tidy
  prometheus wrk
)
PIP_PACKAGES=(numpy safetensors gguf tokenizers sentencepiece jinja2 pytest pytest-timeout openai
  grpcio grpcio-tools grpcio-health-checking grpcio-reflection matplotlib)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install_deps: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
pip_missing=()
for p in "${PIP_PACKAGES[@]}"; do
  "$PY" -m pip show -q "$p" >/dev/null 2>&1 || pip_missing+=("$p")
done
if ((${#pip_missing[@]})); then
  echo "install_deps: pip install ${pip_missing[*]}"
  "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore "${pip_missing[@]}"
fi
