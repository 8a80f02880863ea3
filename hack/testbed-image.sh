#!/usr/bin/env bash
# Prepares the storage tier's VM image, idempotently, under a cache directory this script owns:
#   - Debian packages: qemu (no GUI recommends), lvm2, lvm2-lockd, sanlock, busybox-static...
#   - Debian's stock kernel (unpacked, not installed) and a ~2 MB initramfs: static busybox,
#     the virtio/9p/overlay/device-mapper/virtio-console modules, and an init that mounts this
#     machine's / read-only over 9p with a tmpfs overlay and hands over to the guest daemon.
# The guests therefore run this machine's own lvm2/lvmlockd/sanlock binaries and the
# project's guest daemon. Prints the image directory. Cached run: well under a second.
set -euo pipefail
CACHE=${SHAREDLVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sharedlvm-operator}
OUT="$CACHE/testbed/image"
log() { echo "testbed-image: $*" >&2; }

PKGS=(qemu-system-x86 lvm2 lvm2-lockd sanlock busybox-static cpio kmod)
missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
# Never let the host itself run LVM daemons against the LUN images (it has no device-mapper
# anyway); the guests start their own.

stamp="$OUT/.complete-v4"
if [[ -f "$stamp" ]]; then echo "$OUT"; exit 0; fi
start=$SECONDS
rm -rf "$OUT"; mkdir -p "$OUT"; cd "$OUT"

KPKG=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9][^ ]*\)/\1/p' | head -1)
[[ -n "$KPKG" ]] || { apt-get update -qq >&2; KPKG=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9][^ ]*\)/\1/p' | head -1); }
KV=${KPKG#linux-image-}
log "kernel $KPKG"
apt-get download -qq "$KPKG" >&2
dpkg-deb -x "$KPKG"_*.deb kernel
rm -f "$KPKG"_*.deb
/sbin/depmod -b "$OUT/kernel" "$KV"
cp "kernel/boot/vmlinuz-$KV" vmlinuz

mkdir -p ird/{bin,dev,proc,sys,host,upper,newroot,mods}
cp /bin/busybox ird/bin/busybox
# virtio + 9p root, overlay, device-mapper (linear, mirror for pvmove, snapshot), virtio-serial,
# virtio-net (only used by beds that give a guest restricted forwards to this machine's loopback).
for m in virtio_pci virtio_blk 9p 9pnet_virtio overlay dm-mod dm-mirror dm-snapshot virtio_console virtio_net; do
  /sbin/modprobe -d "$OUT/kernel" -S "$KV" --show-depends "$m"
done | awk '$1=="insmod"{print $2}' | awk '!seen[$0]++' > ird/mods/order.full
while read -r f; do cp "$f" ird/mods/; done < ird/mods/order.full
sed 's|.*/||' ird/mods/order.full > ird/mods/order; rm ird/mods/order.full
cat > ird/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m 2>/dev/null || echo "insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host || echo "9p mount failed"
mount -t tmpfs tmpfs /upper; mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/host,upperdir=/upper/u,workdir=/upper/w /newroot || echo "overlay failed"
GUESTD="$(sed -n 's/.*sharedlvm.guestd=\([^ ]*\).*/\1/p' /proc/cmdline)"
for d in dev proc sys; do mount --move /$d /newroot/$d; done
exec switch_root /newroot "$GUESTD"
INIT
chmod +x ird/init
(cd ird && find . | cpio -o -H newc 2>/dev/null | gzip -1) > initrd.gz
rm -rf ird
echo "$KV" > kernel-version
touch "$stamp"
log "image ready in $((SECONDS - start)) s"
echo "$OUT"
