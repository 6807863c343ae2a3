#!/bin/bash
# make-runtime.sh [RUNTIME_DIR]
#
# Builds the guest kernel part of banger's runtime bundle from Debian's
# linux-image-cloud-amd64 package:
#
#   RUNTIME_DIR/kernel/vmlinux      uncompressed ELF (PVH entry), taken out of the bzImage
#   RUNTIME_DIR/kernel/initrd.img   gzip newc cpio: busybox, virtio/vsock modules, /init
#   RUNTIME_DIR/kernel/release      the kernel release, one line
#   RUNTIME_DIR/kernel/modules/lib/modules/<release>/...   full module tree + depmod files
#
# Everything is built in RUNTIME_DIR/.kernel-build.* and renamed to
# RUNTIME_DIR/kernel only when complete, so an interrupted run leaves no
# half-made kernel behind (other parts of the runtime bundle in RUNTIME_DIR are
# left alone). The .deb is cached in ${XDG_CACHE_HOME:-~/.cache}/banger/debs.
#
# Needs: apt-get, dpkg-deb, lz4, cpio, gzip, fakeroot, busybox-static, and
# preferably kmod (its depmod also writes the binary indexes; busybox's
# depmod, the fallback, writes the text files only). Run as root on a fresh
# machine it runs `apt-get update` when apt cannot resolve the kernel package.
set -euo pipefail

RUNTIME_DIR=${1:-./runtime}
META_PKG=linux-image-cloud-amd64
CACHE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/banger/debs
BUSYBOX=/bin/busybox

# Loaded by /init in this order; virtio_mmio finds QEMU microvm's and
# Firecracker's devices through ACPI.
INITRD_MODULES="virtio virtio_ring virtio_mmio virtio_blk failover net_failover virtio_net virtio_console vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport"

START=$(date +%s)
log() { printf 'make-runtime: [%3ss] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
die() { printf 'make-runtime: error: %s\n' "$*" >&2; exit 1; }

need() { # need COMMAND DEBIAN-PACKAGE
	command -v "$1" >/dev/null 2>&1 || die "$1 not found: apt-get install -y $2"
}
need apt-get apt
need dpkg-deb dpkg
need lz4 lz4
need cpio cpio
need gzip gzip
need fakeroot fakeroot
need od coreutils
[ -x "$BUSYBOX" ] || die "$BUSYBOX not found: apt-get install -y busybox-static"
# The dynamically linked busybox package also installs /bin/busybox; it would
# not run in the initramfs, which has no libc.
case $(LC_ALL=C ldd "$BUSYBOX" 2>&1 || true) in
*"not a dynamic executable"* | *"statically linked"*) ;;
*) die "$BUSYBOX is dynamically linked: apt-get install -y busybox-static" ;;
esac

# --- which kernel package -------------------------------------------------

resolve_kernel_pkg() {
	apt-cache depends "$META_PKG" 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1
}

KPKG=$(resolve_kernel_pkg)
if [ -z "$KPKG" ] && [ "$(id -u)" = 0 ]; then
	log "apt does not know $META_PKG yet: running apt-get update"
	apt-get update -qq
	KPKG=$(resolve_kernel_pkg)
fi

mkdir -p "$CACHE_DIR"
if [ -n "$KPKG" ]; then
	KVER=$(apt-cache show --no-all-versions "$KPKG" | sed -n 's/^Version: //p' | head -n1)
	# apt-get download's file name: epoch colon escaped as %3a.
	DEB="$CACHE_DIR/${KPKG}_${KVER//:/%3a}_amd64.deb"
	if [ -s "$DEB" ] && dpkg-deb --info "$DEB" >/dev/null 2>&1; then
		log "using cached $DEB"
	else
		log "downloading $KPKG $KVER (what $META_PKG depends on)"
		DL_OPTS=()
		# As root apt drops to the _apt user, who cannot write to root's cache.
		[ "$(id -u)" = 0 ] && DL_OPTS=(-o APT::Sandbox::User=root)
		(cd "$CACHE_DIR" && apt-get download -q "${DL_OPTS[@]}" "$KPKG")
		[ -s "$DEB" ] || die "apt-get download did not produce $DEB"
	fi
else
	# Offline rerun: fall back to the newest cached package.
	DEB=$(find "$CACHE_DIR" -maxdepth 1 -name 'linux-image-*-cloud-amd64_*.deb' | sort -V | tail -n1)
	[ -n "$DEB" ] || die "cannot resolve $META_PKG with apt-cache and no cached package in $CACHE_DIR (run apt-get update)"
	log "apt cannot resolve $META_PKG: using cached $DEB"
fi

# --- work area ------------------------------------------------------------

mkdir -p "$RUNTIME_DIR"
RUNTIME_DIR=$(cd "$RUNTIME_DIR" && pwd)
BUILD=$(mktemp -d "$RUNTIME_DIR/.kernel-build.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
trap 'exit 130' INT TERM HUP
WORK=$BUILD/work
OUT=$BUILD/kernel
mkdir -p "$WORK/pkg" "$OUT"

log "extracting $(basename "$DEB")"
dpkg-deb -x "$DEB" "$WORK/pkg"
set -- "$WORK"/pkg/boot/vmlinuz-*
if [ $# != 1 ] || [ ! -f "$1" ]; then
	die "expected exactly one boot/vmlinuz-* in $DEB"
fi
BZIMAGE=$1
RELEASE=${BZIMAGE##*/vmlinuz-}
MODSRC=$WORK/pkg/lib/modules/$RELEASE
[ -d "$MODSRC" ] || MODSRC=$WORK/pkg/usr/lib/modules/$RELEASE
[ -d "$MODSRC" ] || die "no lib/modules/$RELEASE in $DEB"
log "kernel release $RELEASE"
echo "$RELEASE" >"$OUT/release"

# --- vmlinux out of the bzImage ---------------------------------------------
# Boot protocol header: setup_sects (u8) at 0x1f1; payload_offset and
# payload_length (little-endian u32) at 0x248 and 0x24c. The compressed
# kernel starts payload_offset bytes after the real-mode setup code, which is
# (setup_sects + 1) 512-byte sectors long.

read_u() { # read_u FILE OFFSET SIZE -> unsigned little-endian integer
	od -An -v -tu"$3" --endian=little -j "$2" -N "$3" "$1" | tr -d ' \n'
}
[ "$(od -An -c -j $((0x202)) -N 4 "$BZIMAGE" | tr -d ' ')" = HdrS ] ||
	die "$BZIMAGE is not a bzImage (no HdrS header)"
SETUP_SECTS=$(read_u "$BZIMAGE" $((0x1f1)) 1)
[ "$SETUP_SECTS" = 0 ] && SETUP_SECTS=4 # boot protocol: 0 means 4
PAYLOAD_OFFSET=$(read_u "$BZIMAGE" $((0x248)) 4)
PAYLOAD_LENGTH=$(read_u "$BZIMAGE" $((0x24c)) 4)
START_BYTE=$(((SETUP_SECTS + 1) * 512 + PAYLOAD_OFFSET))
log "vmlinux: payload of $PAYLOAD_LENGTH bytes at byte $START_BYTE (setup_sects=$SETUP_SECTS, payload_offset=$PAYLOAD_OFFSET)"
dd if="$BZIMAGE" of="$WORK/payload" bs=1M iflag=skip_bytes,count_bytes \
	skip="$START_BYTE" count="$PAYLOAD_LENGTH" status=none
MAGIC=$(od -An -tx1 -N4 "$WORK/payload" | tr -d ' \n')
case $MAGIC in
02214c18) DECOMP="lz4 -dc" ;;  # LZ4 legacy (Debian 12)
1f8b*) DECOMP="gzip -dc" ;;
fd377a58) DECOMP="xz -dc" ;;
28b52ffd) DECOMP="zstd -dc" ;;
*) die "unknown payload compression (magic $MAGIC)" ;;
esac
# The kernel build appends the uncompressed size after the compressed
# stream; decompressors may warn about it, the ELF check below is the test.
$DECOMP <"$WORK/payload" >"$OUT/vmlinux" 2>"$WORK/decomp.log" || true
[ "$(od -An -tx1 -N4 "$OUT/vmlinux" | tr -d ' \n')" = 7f454c46 ] ||
	die "decompressing the payload ($DECOMP) did not give an ELF: $(cat "$WORK/decomp.log")"
rm -f "$WORK/payload"
log "vmlinux: $(stat -c %s "$OUT/vmlinux") bytes"

# --- module tree ------------------------------------------------------------

log "copying module tree and running depmod"
mkdir -p "$OUT/modules/lib/modules"
cp -a "$MODSRC" "$OUT/modules/lib/modules/"
MODDIR=$OUT/modules/lib/modules/$RELEASE
if command -v depmod >/dev/null 2>&1; then
	depmod -b "$OUT/modules" "$RELEASE"
else
	log "kmod's depmod not found: using busybox depmod (text indexes only; apt-get install -y kmod for the binary ones)"
	"$BUSYBOX" depmod -b "$OUT/modules" "$RELEASE"
fi
[ -s "$MODDIR/modules.dep" ] || die "depmod wrote no modules.dep"

# --- initramfs ----------------------------------------------------------------

log "building initrd.img"
ROOT=$WORK/initrd
mkdir -p "$ROOT/bin" "$ROOT/dev" "$ROOT/proc" "$ROOT/sys" "$ROOT/newroot" "$ROOT/lib/modules"
cp "$BUSYBOX" "$ROOT/bin/busybox"

# module_path NAME [INDEX]: the module's path as listed in modules.dep (or in
# INDEX, such as modules.builtin); '-' and '_' match alike, as in the kernel.
module_path() {
	awk -F: -v n="$1" '
		function norm(s) { sub(/.*\//, "", s); sub(/\.ko.*$/, "", s); gsub(/-/, "_", s); return s }
		BEGIN { gsub(/-/, "_", n) }
		norm($1) == n { print $1; exit }' "$MODDIR/${2:-modules.dep}"
}

# add_module PATH: queue PATH's dependencies (per modules.dep), then PATH.
LOAD_PATHS=""
add_module() {
	local dep deps
	case " $LOAD_PATHS " in *" $1 "*) return ;; esac
	read -r -a deps <<<"$(awk -v m="$1:" '$1 == m { $1 = ""; print }' "$MODDIR/modules.dep")"
	for dep in "${deps[@]}"; do
		add_module "$dep"
	done
	LOAD_PATHS="$LOAD_PATHS $1"
}

# The wanted list is in the order the modules are meant to come up, but
# virtio itself needs virtio_ring: dependencies go first.
for m in $INITRD_MODULES; do
	path=$(module_path "$m")
	if [ -n "$path" ]; then
		add_module "$path"
	elif [ -n "$(module_path "$m" modules.builtin)" ]; then
		log "  $m: built into the kernel"
	else
		log "  $m: WARNING: neither a module nor built in"
	fi
done
LOAD_ORDER=""
for path in $LOAD_PATHS; do
	name=${path##*/}
	name=${name%%.ko*}
	LOAD_ORDER="$LOAD_ORDER $name"
	case $path in
	*.ko) cp "$MODDIR/$path" "$ROOT/lib/modules/$name.ko" ;;
	*.ko.xz) xz -dc "$MODDIR/$path" >"$ROOT/lib/modules/$name.ko" ;;
	*.ko.zst) zstd -qdc "$MODDIR/$path" >"$ROOT/lib/modules/$name.ko" ;;
	*) die "cannot unpack module $path" ;;
	esac
	log "  $name: $path"
done
LOAD_ORDER=${LOAD_ORDER# }
log "initramfs load order: $LOAD_ORDER"
echo "$LOAD_ORDER" >"$ROOT/lib/modules/load-order"

cat >"$ROOT/init" <<'EOF'
#!/bin/busybox sh
# banger initramfs: load the virtio/vsock modules, then switch to the root disk.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

cmdline=" $(cat /proc/cmdline) "

for m in $(cat /lib/modules/load-order); do
	if [ -f "/lib/modules/$m.ko" ]; then
		insmod "/lib/modules/$m.ko" || echo "banger-init: insmod $m failed"
	else
		echo "banger-init: module $m not in the initramfs (built in or missing)"
	fi
done

# Accelerator probe: the host only wants to know that a guest runs at all.
case $cmdline in
*" banger.probe=1 "*)
	echo "banger-probe: ok"
	reboot -f
	poweroff -f
	exit 1 ;;
esac

root=/dev/vda
for arg in $cmdline; do
	case $arg in root=/dev/*) root=${arg#root=} ;; esac
done

i=0
while [ ! -b "$root" ] && [ $i -lt 300 ]; do
	sleep 0.1
	i=$((i + 1))
done

rescue() {
	echo "banger-init: $*"
	echo "banger-init: dropping to a shell (exit to reboot)"
	setsid cttyhack sh
	reboot -f
}

if [ ! -b "$root" ]; then
	rescue "root device $root did not appear within 30 s"
fi
if ! mount -o rw "$root" /newroot; then
	rescue "cannot mount $root on /newroot"
fi
if [ ! -x /newroot/sbin/init ] && [ ! -L /newroot/sbin/init ]; then
	rescue "$root has no /sbin/init"
fi
for d in dev proc sys; do
	mkdir -p "/newroot/$d"
	mount --move "/$d" "/newroot/$d"
done
exec switch_root /newroot /sbin/init
EOF
chmod 0755 "$ROOT/init"

# fakeroot lets a non-root user make /dev/console (the kernel opens it for
# /init before devtmpfs is mounted) and store root ownership in the archive.
(cd "$ROOT" && fakeroot sh -c 'mknod -m 600 dev/console c 5 1 &&
	find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0' | gzip -9n >"$OUT/initrd.img")
log "initrd.img: $(stat -c %s "$OUT/initrd.img") bytes"

# --- into place -------------------------------------------------------------

rm -rf "$WORK"
if [ -e "$RUNTIME_DIR/kernel" ]; then
	mv "$RUNTIME_DIR/kernel" "$BUILD/old"
fi
if ! mv "$OUT" "$RUNTIME_DIR/kernel"; then
	[ -e "$BUILD/old" ] && mv "$BUILD/old" "$RUNTIME_DIR/kernel"
	die "cannot move the new kernel into $RUNTIME_DIR/kernel"
fi
log "done: $RUNTIME_DIR/kernel ($RELEASE) in $(($(date +%s) - START)) s"
