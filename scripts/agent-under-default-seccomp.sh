#!/bin/sh
# Run the agent from this checkout in a podman container under podman's default seccomp
# profile, with the chart's capabilities only (no --privileged, no seccomp=unconfined), to
# check that it works under a runtime's default profile (the chart's RuntimeDefault).
#   sudo scripts/agent-under-default-seccomp.sh RULES POLICIES WORKDIR [agent flags...]
# Then: curl 127.0.0.1:19377/readyz, trip a rule, read WORKDIR/audit.jsonl;
# podman rm -f enf-seccomp-check to stop it.
set -eu
rules=$(realpath "$1"); policies=$(realpath "$2"); work=$(realpath "$3"); shift 3
repo=$(cd "$(dirname "$0")/.." && pwd)
exec podman --cgroup-manager cgroupfs run --rm --name enf-seccomp-check \
  --pid host --network host --cap-drop ALL \
  --cap-add BPF,PERFMON,SYS_ADMIN,SYS_RESOURCE,KILL,NET_ADMIN,SYS_PTRACE,SYS_NICE \
  --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
  -v /sys/kernel/tracing:/sys/kernel/tracing -v /lib/modules:/lib/modules:ro \
  -v /usr/src:/usr/src:ro -v "$work:$work" -v "$rules:$rules:ro" -v "$policies:$policies:ro" \
  --rootfs /:O "$repo/.venv/bin/enforcer" --rules "$rules" --policies "$policies" \
  --audit-log "$work/audit.jsonl" --state-dir "$work/state" --snapshot-dir "$work/snap" \
  --http-addr 127.0.0.1:19377 --node-name seccomp-check "$@"
