#!/usr/bin/env bash
# Builds the offline container image the system tests use: a busybox-static rootfs with
# a passwd/shadow, imported into podman as localhost/enforcer-busybox:test. Idempotent.
set -euo pipefail
IMAGE=localhost/enforcer-busybox:test
if podman image exists "$IMAGE" 2>/dev/null; then exit 0; fi
bb=$(command -v busybox || true)
[ -n "$bb" ] || { echo "test-image: busybox not found (apt-get install busybox-static)" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc,tmp,root,dev,proc,sys,var/log,dev/shm}
cp "$bb" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
printf 'root:*:19000:0:99999:7:::\n' > "$root/etc/shadow"
chmod 600 "$root/etc/shadow"
tar -C "$root" -cf "$root.tar" .
podman import --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' "$root.tar" "$IMAGE" >/dev/null
rm -f "$root.tar"
