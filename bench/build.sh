#!/usr/bin/env bash
# banger image build benchmarks, each a side-by-side comparison in one run:
#   debian   `banger image build --from debian:RELEASE --no-cache` vs the same
#            tools run by hand doing the same work (mmdebstrap with banger's
#            arguments and customize.sh hook, then tar -x + truncate +
#            mkfs.ext4 -d under one fakeroot, then removing its tree and
#            tarball: each side's cleanup is in its timer), interleaved with
#            the first side alternating, RUNS times each
#   rebuild  a first build (--no-cache) vs unchanged rebuilds, which must come
#            from the build cache (a hard link of the cached ext4)
#   oci      for context: one --no-cache build from a docker-archive holding
#            the root file system the by-hand debian run made (one layer)
# Needs mmdebstrap, fakeroot, e2fsprogs, python3, Debian's mirror (so it runs
# outside any network namespace; it boots no VMs), bin/ (make build) and a
# runtime bundle (make runtime). Everything lives under BENCH_ROOT (private
# XDG dirs); the daemon it starts there is stopped at the end.
# Usage: bench/build.sh [debian] [rebuild] [oci]   (default: all)
#   RUNS=3 RELEASE=bookworm BENCH_ROOT=/tmp/bgr-bench-build
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RUNS=${RUNS:-3}
RELEASE=${RELEASE:-bookworm}
ROOT=${BENCH_ROOT:-/tmp/bgr-bench-build}
MIRROR=http://deb.debian.org/debian # image.DefaultMirror
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(debian rebuild oci)
for p in "${parts[@]}"; do
	case $p in debian | rebuild | oci) ;; *) echo "usage: $0 [debian] [rebuild] [oci]" >&2 && exit 2 ;; esac
done

B="$REPO/bin/banger"
if [ ! -x "$B" ] || [ ! -x "$REPO/bin/bangerd" ]; then
	echo "bench: no bin/banger or bin/bangerd: run make build" >&2
	exit 1
fi
if [ ! -f "$REPO/runtime/agent/banger-vsock-pingd" ] || [ ! -d "$REPO/runtime/kernel/modules/lib/modules" ]; then
	echo "bench: no runtime bundle in ./runtime: run make runtime" >&2
	exit 1
fi
for t in mmdebstrap fakeroot mkfs.ext4 python3; do
	command -v "$t" >/dev/null || { echo "bench: $t not found" >&2 && exit 1; }
done

export XDG_CONFIG_HOME=$ROOT/config XDG_STATE_HOME=$ROOT/state XDG_DATA_HOME=$ROOT/data \
	XDG_CACHE_HOME=$ROOT/cache XDG_RUNTIME_DIR=$ROOT/run
mkdir -p "$ROOT"
chmod 755 "$ROOT" # mmdebstrap's unshared root enters the by-hand folders in here

HAND=$ROOT/hand # the by-hand build's working folder
OCI=$ROOT/oci   # the docker-archive for the oci part
SNAP=$ROOT/src  # the scripts and runtime this run uses, for both sides

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b-a}'; }
round() { awk -v a="$1" -v d="$2" 'BEGIN {printf "%." d "f", a}'; }
median() { # median [DIGITS]
	sort -g | awk -v d="${1:-1}" '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%." d "f\n", m}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a/b}'; }
mib() { awk -v a="$1" 'BEGIN {printf "%d", a/1048576}'; }
jsonget() { python3 -c 'import json,sys; v=json.load(sys.stdin)[sys.argv[1]]; print(v if isinstance(v, str) else json.dumps(v))' "$1"; }
die() {
	echo "bench: FAILED: $*" >&2
	exit 1
}
bench_images() { # names of the images this script makes (left over from an interrupted run)
	"$B" image ls --json 2>/dev/null | python3 -c '
import json, re, sys
for i in json.load(sys.stdin) or []:
    if re.match(r"(bench|rb|oci)-", i["name"]):
        print(i["name"])' || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	local left
	left=$(bench_images)
	# shellcheck disable=SC2086 # a list of image names
	[ -z "$left" ] || "$B" image rm --force $left >/dev/null 2>&1 || true
	"$B" daemon stop >/dev/null 2>&1 || true
	# As root, rm removes whatever mmdebstrap's user namespace left behind.
	rm -rf "$HAND" "$OCI"
	[ "$rc" = 0 ] || echo "bench: exit status $rc; daemon stopped, temporary trees removed (daemon log under $XDG_STATE_HOME/banger)" >&2
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# One snapshot of the scripts and of the runtime bundle for both sides: the
# daemon uses this runtime (BANGER_RUNTIME_DIR), the by-hand runs these files,
# and a concurrent `make runtime` (a new agent, so a new cache key) cannot
# change them halfway. bangerd embeds scripts/ as it was at `make build`.
rm -rf "$SNAP"
mkdir -p "$SNAP/scripts"
cp -a "$REPO/scripts/customize.sh" "$REPO/scripts/guest" "$SNAP/scripts/"
cp -a "$REPO/runtime" "$SNAP/runtime"
export BANGER_RUNTIME_DIR=$SNAP/runtime
PKGS=$(sed -n 's/^var BasePackages = \[\]string{\(.*\)}$/\1/p' "$REPO/internal/image/debian.go" | tr -d '" ')
[ -n "$PKGS" ] || die "could not read BasePackages from internal/image/debian.go"
PUBKEY="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchBenchBenchBenchBenchBenchBenchBench00 bench@banger"

echo "$("$B" version 2>/dev/null | head -n1); runs: $RUNS; release: $RELEASE; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
left=$(bench_images)
# shellcheck disable=SC2086 # a list of image names
[ -z "$left" ] || "$B" image rm --force $left >/dev/null

# hand_build SIZE [keep]: the by-hand build into $HAND/img, SIZE bytes, and
# its cleanup (the unpacked tree and the tarball, as banger's build removes
# its own), all timed; prints the wall time in seconds. With keep, the
# tarball is moved to $OCI/rootfs.tar for the oci part instead of removed.
hand_build() {
	local size=$1 keep=${2:-} t0 t1
	rm -rf "$HAND"
	mkdir -m 755 "$HAND"
	t0=$(now)
	(
		cd "$HAND"
		TMPDIR=$HAND BANGER_MODULES_DIR=$SNAP/runtime/kernel/modules BANGER_SSH_PUBKEY=$PUBKEY \
			BANGER_AGENT_BIN=$SNAP/runtime/agent/banger-vsock-pingd \
			mmdebstrap --mode=unshare --variant=minbase --include="$PKGS" \
			--customize-hook="sh '$SNAP/scripts/customize.sh' \"\$1\"" \
			"$RELEASE" "$HAND/rootfs.tar" "$MIRROR"
	) >"$ROOT/hand-mmdebstrap.log" 2>&1 || die "by-hand mmdebstrap failed; see $ROOT/hand-mmdebstrap.log"
	# shellcheck disable=SC2016 # expanded by the inner sh
	fakeroot sh -c 'set -e; cd "$1"; mkdir tree; tar -xpf rootfs.tar -C tree --numeric-owner; truncate -s "$2" img; mkfs.ext4 -q -F -L banger-root -d tree img' \
		fakeroot-build "$HAND" "$size" || die "by-hand fakeroot tar -x + mkfs.ext4 failed"
	rm -rf "$HAND/tree"
	if [ -n "$keep" ]; then
		mkdir -p "$OCI" && mv "$HAND/rootfs.tar" "$OCI/rootfs.tar"
	else
		rm -f "$HAND/rootfs.tar"
	fi
	t1=$(now)
	elapsed "$t0" "$t1"
}

# build NAME ARGS...: `banger image build NAME ARGS... --quiet`; prints its wall time.
build() {
	local name=$1 t0 t1
	shift
	t0=$(now)
	"$B" image build "$name" "$@" --quiet >/dev/null || die "banger image build $name $*"
	t1=$(now)
	elapsed "$t0" "$t1"
}

bench_debian() {
	echo "== debian: banger image build --from debian:$RELEASE --no-cache vs mmdebstrap + fakeroot (tar -x, truncate, mkfs.ext4 -d) by hand ($RUNS runs each, interleaved, the side that goes first alternating)"
	echo "by hand: mmdebstrap --mode=unshare --variant=minbase --include=$PKGS --customize-hook=\"sh customize.sh \\\"\$1\\\"\" $RELEASE rootfs.tar $MIRROR; then its tree and tarball removed, in its timer; image size: the one banger chose (in run 1, then the previous run)"
	local bt=() ht=() i t th size="" keep order
	for i in $(seq "$RUNS"); do
		keep=""
		[ "$i" != "$RUNS" ] || keep=keep # the last tarball feeds the oci part
		# Run 1 needs banger's image size first; after that the order alternates
		# so neither side always meets a warm (or a cold) page cache and mirror.
		if [ -z "$size" ] || [ $((i % 2)) = 1 ]; then
			t=$(build "bench-$i" --from "debian:$RELEASE" --no-cache)
			size=$("$B" image show --json "bench-$i" | jsonget size_bytes)
			"$B" image rm "bench-$i" >/dev/null
			th=$(hand_build "$size" $keep)
			order="banger first"
		else
			th=$(hand_build "$size" $keep)
			t=$(build "bench-$i" --from "debian:$RELEASE" --no-cache)
			size=$("$B" image show --json "bench-$i" | jsonget size_bytes)
			"$B" image rm "bench-$i" >/dev/null
			order="by hand first"
		fi
		bt+=("$t")
		ht+=("$th")
		rm -rf "$HAND"
		echo "run $i ($order): banger $(round "$t" 1) s, by hand $(round "$th" 1) s; image $(mib "$size") MiB"
	done
	local mb mh
	mb=$(printf '%s\n' "${bt[@]}" | median)
	mh=$(printf '%s\n' "${ht[@]}" | median)
	echo "debian: median banger ${mb} s, by hand ${mh} s, ratio banger/by-hand $(ratio "$mb" "$mh") (goal <= 1.15)"
	DEBIAN_MEDIAN=$mb
}

bench_rebuild() {
	echo "== rebuild: first build (--no-cache) vs unchanged rebuilds from the build cache ($RUNS rebuilds)"
	local first cached ct=() i t
	first=$(build rb-first --from "debian:$RELEASE" --no-cache)
	[ "$("$B" image show --json rb-first | jsonget cached)" = false ] || die "rb-first, built with --no-cache, says it came from the cache"
	echo "first: rb-first (--no-cache) $(round "$first" 1) s"
	for i in $(seq "$RUNS"); do
		t=$(build rb-again --from "debian:$RELEASE")
		cached=$("$B" image show --json rb-again | jsonget cached)
		[ "$cached" = true ] ||
			die "rebuild $i: rb-again (same source and inputs as rb-first) was built, not taken from the build cache (\"cached\": $cached); see the daemon log under $XDG_STATE_HOME/banger"
		ct+=("$t")
		echo "rebuild $i: rb-again $t s (cached: true)"
		"$B" image rm rb-again >/dev/null
	done
	"$B" image rm rb-first >/dev/null
	local mc
	mc=$(printf '%s\n' "${ct[@]}" | median 3)
	echo "rebuild: median cached ${mc} s, first $(round "$first" 1) s, ratio cached/first $(ratio "$mc" "$first") (goal <= 0.05)"
}

bench_oci() {
	echo "== oci (context): one banger image build --from docker-archive: --no-cache of a Debian $RELEASE tree"
	if [ ! -f "$OCI/rootfs.tar" ]; then
		echo "(no by-hand tarball from the debian part: making one with mmdebstrap, not timed)"
		hand_build $((1 << 30)) keep >/dev/null
		rm -rf "$HAND"
	fi
	# A one-layer docker archive of the tarball (already customized once;
	# customize.sh is idempotent and runs again in banger's OCI build).
	python3 - "$OCI/rootfs.tar" "$OCI/image.tar" <<'EOF'
import hashlib, io, json, sys, tarfile
layer, out = sys.argv[1], sys.argv[2]
h = hashlib.sha256()
with open(layer, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                     "rootfs": {"type": "layers", "diff_ids": ["sha256:" + h.hexdigest()]}}).encode()
manifest = json.dumps([{"Config": "config.json", "RepoTags": ["bench/debian:latest"], "Layers": ["layer.tar"]}]).encode()
with tarfile.open(out, "w") as t:
    for name, data in (("config.json", config), ("manifest.json", manifest)):
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    t.add(layer, arcname="layer.tar")
EOF
	rm -f "$OCI/rootfs.tar"
	local t size
	t=$(build oci-1 --from "docker-archive:$OCI/image.tar" --no-cache)
	size=$("$B" image show --json oci-1 | jsonget size_bytes)
	"$B" image rm oci-1 >/dev/null
	rm -rf "$OCI"
	echo "oci: docker-archive build (flatten, extract, customize.sh, mkfs.ext4) $(round "$t" 1) s; image $(mib "$size") MiB${DEBIAN_MEDIAN:+ (debian:$RELEASE median above: $DEBIAN_MEDIAN s)}"
}

DEBIAN_MEDIAN=""
for p in "${parts[@]}"; do "bench_$p"; done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
