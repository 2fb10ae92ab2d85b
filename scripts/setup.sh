#!/usr/bin/env bash
# Prepares this machine for enforcer, idempotently: Debian packages (bcc, kernel headers,
# podman), kernel headers linked for the running kernel, tracefs mounted, and a venv in .venv
# made from Debian's python3 with --system-site-packages so that bcc (python3-bpfcc) imports.
# Must run as root: it installs packages and mounts tracefs.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  log "must run as root (it installs Debian packages and mounts tracefs); try: sudo $0"
  exit 2
fi

# Debian packages: bcc and its Python module (compiles the probes, in a child process),
# libbpf1 (the agent reads maps and ring buffers through it), headers for bcc, podman
# and an OCI runtime for container tests, busybox-static to build an offline test image,
# mmdebstrap to make the Debian base of the agent image without a container registry;
# chromium and its WebDriver for the console's browser tests; containerd (with ctr and its
# runc shim) for the CRI tests, which start a private one (tests/system/containerd.py);
# postgresql for the cluster store's tests, which initdb and start a private server each.
PKGS=(python3 python3-venv python3-pip python3-bpfcc bpfcc-tools libbpfcc libbpf1 linux-headers-amd64
      podman runc busybox-static iproute2 procps kmod ca-certificates util-linux gcc libc6-dev
      mmdebstrap chromium chromium-driver containerd postgresql)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bcc looks for headers at /lib/modules/$(uname -r)/build. The running kernel may have no
# headers package of its own; the Debian one is close enough for tracepoint programs, which
# read their argument layout from tracefs at load time rather than from kernel structs.
kdir="/lib/modules/$(uname -r)"
if [ ! -e "$kdir/build/include" ]; then
  arch_hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
  common_hdr=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$arch_hdr" ]; then
    log "no kernel headers under /usr/src after installing linux-headers-amd64"; exit 1
  fi
  mkdir -p "$kdir"
  ln -sfn "$arch_hdr" "$kdir/build"
  ln -sfn "${common_hdr:-$arch_hdr}" "$kdir/source"
  log "linked $kdir/build -> $arch_hdr"
fi

if [ ! -e /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
if [ ! -e /sys/kernel/debug/tracing ] && [ -d /sys/kernel/debug ]; then
  mount -t debugfs nodev /sys/kernel/debug 2>/dev/null || true
fi

# podman's Docker-compatible API, where the agent looks up container names, images and pod
# labels (/run/podman/podman.sock); the system tests start it themselves when it is absent.
mkdir -p /run/podman

# The offline busybox image the container tests run (built from busybox-static, no pulls).
if command -v podman >/dev/null 2>&1; then
  bash scripts/test-image.sh || log "could not build the test image (scripts/test-image.sh)"
fi

# The venv: Debian's python3 (3.11, the one python3-bpfcc is built for).
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import bcc' 2>/dev/null; then
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
  log "created .venv"
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml setup.py | sha256sum | cut -c1-16)
if [ ! -e "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  rm -f .venv/.installed-*
  touch "$stamp"
  log "installed enforcer into .venv"
fi
