#!/usr/bin/env bash
# Builds the enforcer container image from the Containerfile with podman:
#
#   sudo bash scripts/build-image.sh [TAG]        # default tag: localhost/enforcer:<version>
#
# The base image is Debian bookworm. When no copy of it is present locally and none can be
# pulled (offline or registry-less machines), it is bootstrapped from Debian's own package
# mirror (this host's apt sources) with mmdebstrap and imported as localhost/debian:bookworm-slim.
# Behind a TLS-intercepting proxy, pip inside the build needs that proxy's CA: set
# BUILD_CA_FILE, or it is taken from the host pip's `global.cert` setting when there is one.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'build-image: %s\n' "$*" >&2; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
tag=${1:-localhost/enforcer:$version}
base=${DEBIAN_IMAGE:-docker.io/library/debian:bookworm-slim}
# podman's defaults here: cgroupfs (no systemd), explicit ulimits (see DESIGN: containers).
podman=(podman --cgroup-manager cgroupfs)
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

if ! "${podman[@]}" image exists "$base" && ! "${podman[@]}" pull -q "$base" >/dev/null 2>&1; then
  base=localhost/debian:bookworm-slim
  if ! "${podman[@]}" image exists "$base"; then
    command -v mmdebstrap >/dev/null || { log "no base image and no mmdebstrap: apt-get install mmdebstrap"; exit 3; }
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    log "bootstrapping $base with mmdebstrap"
    # No mirror argument: mmdebstrap uses this host's apt sources.
    mmdebstrap --quiet --variant=minbase --mode=root bookworm "$work/rootfs.tar"
    "${podman[@]}" import -q "$work/rootfs.tar" "$base" >/dev/null
  fi
fi

build_opts=()
ca=${BUILD_CA_FILE:-}
if [ -z "$ca" ]; then
  ca=$(python3 -m pip config list 2>/dev/null | sed -n "s/^global\.cert='\(.*\)'$/\1/p" | head -n 1)
fi
if [ -n "$ca" ] && [ -f "$ca" ]; then
  conf=$(mktemp)
  printf '[global]\ncert = /run/build-ca.crt\n' > "$conf"
  build_opts+=(-v "$ca:/run/build-ca.crt:ro" -v "$conf:/etc/pip.conf:ro")
  log "pip in the build trusts $ca"
fi

log "building $tag from $base"
"${podman[@]}" build "${limits[@]}" "${build_opts[@]}" --build-arg "DEBIAN_IMAGE=$base" \
  -t "$tag" -f Containerfile .
[ -z "${conf:-}" ] || rm -f "$conf"
log "built $tag"
