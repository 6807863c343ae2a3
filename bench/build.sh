#!/usr/bin/env bash
# banger image build benchmarks, each a side-by-side comparison in one run:
#   debian   `banger image build --from debian:RELEASE --no-cache` of this
#            tree vs the same command of banger at commit OLD (built in a
#            temporary git worktree), interleaved with the side that goes
#            first alternating, RUNS times each: medians and their ratio
#   oci      the same for `--from docker-archive:` of a one-layer Debian
#            image (made once with mmdebstrap, not timed)
#   rebuild  a first build (--no-cache) vs unchanged rebuilds, which must come
#            from the build cache (a hard link of the cached ext4)
# OLD defaults to the last main commit before the build sandbox (issue 10):
# the previous pipeline (mmdebstrap with customize.sh as hook + fakeroot;
# OCI: unshare(1) namespaces). Both sides use one snapshot of the runtime
# bundle and private XDG dirs under BENCH_ROOT; their daemons are stopped at
# the end. Needs git, go, mmdebstrap, fakeroot (the old side), e2fsprogs,
# python3, Debian's mirror (so it runs outside any network namespace; it
# boots no VMs), root's subordinate ids (make deps), bin/ (make build) and a
# runtime bundle (make runtime).
# Usage: bench/build.sh [debian] [oci] [rebuild]   (default: all)
#   RUNS=3 RELEASE=bookworm OLD=92aa99f BENCH_ROOT=/tmp/bgr-bench-build
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RUNS=${RUNS:-3}
RELEASE=${RELEASE:-bookworm}
OLD=${OLD:-92aa99f}
ROOT=${BENCH_ROOT:-/tmp/bgr-bench-build}
MIRROR=http://deb.debian.org/debian # image.DefaultMirror
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(debian oci rebuild)
for p in "${parts[@]}"; do
	case $p in debian | oci | rebuild) ;; *) echo "usage: $0 [debian] [oci] [rebuild]" >&2 && exit 2 ;; esac
done

if [ ! -x "$REPO/bin/banger" ] || [ ! -x "$REPO/bin/bangerd" ]; then
	echo "bench: no bin/banger or bin/bangerd: run make build" >&2
	exit 1
fi
if [ ! -f "$REPO/runtime/agent/banger-vsock-pingd" ] || [ ! -d "$REPO/runtime/kernel/modules/lib/modules" ]; then
	echo "bench: no runtime bundle in ./runtime: run make runtime" >&2
	exit 1
fi
for t in git go mmdebstrap fakeroot mkfs.ext4 python3; do
	command -v "$t" >/dev/null || { echo "bench: $t not found" >&2 && exit 1; }
done

mkdir -p "$ROOT"
chmod 755 "$ROOT"
OLDSRC=$ROOT/old-src # the worktree of OLD
OCI=$ROOT/oci        # the docker-archive for the oci part
SNAP=$ROOT/runtime   # the runtime bundle both sides use

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

# side new|old: the banger CLI of that side, with its own XDG dirs (the
# daemon the CLI starts is the one beside it).
side() {
	local s=$1 bin=$REPO/bin/banger
	[ "$s" = new ] || bin=$OLDSRC/bin/banger
	env XDG_CONFIG_HOME="$ROOT/$s/config" XDG_STATE_HOME="$ROOT/$s/state" XDG_DATA_HOME="$ROOT/$s/data" \
		XDG_CACHE_HOME="$ROOT/$s/cache" XDG_RUNTIME_DIR="$ROOT/$s/run" BANGER_RUNTIME_DIR="$SNAP" "$bin" "${@:2}"
}

bench_images() { # side: names of the images this script makes (left over from an interrupted run)
	side "$1" image ls --json 2>/dev/null | python3 -c '
import json, re, sys
for i in json.load(sys.stdin) or []:
    if re.match(r"(bench|rb|oci)-", i["name"]):
        print(i["name"])' || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	local s left
	for s in new old; do
		if [ ! -d "$ROOT/$s" ] || { [ "$s" = old ] && [ ! -x "$OLDSRC/bin/banger" ]; }; then
			continue
		fi
		left=$(bench_images "$s")
		# shellcheck disable=SC2086 # a list of image names
		[ -z "$left" ] || side "$s" image rm --force $left >/dev/null 2>&1 || true
		side "$s" daemon stop >/dev/null 2>&1 || true
		# The bridge a build sandbox's network attached to, and its policy.
		ip link del "bgrbench$s" >/dev/null 2>&1 || true
		for fam in ip bridge netdev; do nft delete table "$fam" "banger-bgrbench$s" >/dev/null 2>&1 || true; done
	done
	rm -rf "$OCI"
	if [ -d "$OLDSRC" ]; then
		git -C "$REPO" worktree remove --force "$OLDSRC" >/dev/null 2>&1 || rm -rf "$OLDSRC"
		git -C "$REPO" worktree prune
	fi
	[ "$rc" = 0 ] || echo "bench: exit status $rc; daemons stopped, temporary files removed (daemon logs under $ROOT/*/state/banger)" >&2
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# One snapshot of the runtime bundle for both sides: a concurrent
# `make runtime` cannot change it halfway.
rm -rf "$SNAP"
cp -a "$REPO/runtime" "$SNAP"
for s in new old; do
	mkdir -p "$ROOT/$s/config/banger"
	# Bridges of their own (the new side attaches build sandboxes to it).
	printf '[network]\nbridge = "bgrbench%s"\n' "$s" >"$ROOT/$s/config/banger/config.toml"
done

need_old() {
	[ -x "$OLDSRC/bin/banger" ] && return 0
	echo "building banger at $OLD ($(git -C "$REPO" log -1 --format='%h %s' "$OLD" | cut -c1-100)) in $OLDSRC"
	git -C "$REPO" worktree remove --force "$OLDSRC" >/dev/null 2>&1 || rm -rf "$OLDSRC"
	git -C "$REPO" worktree prune
	git -C "$REPO" worktree add --detach "$OLDSRC" "$OLD" >/dev/null 2>&1 || die "git worktree add $OLD"
	make -C "$OLDSRC" build >"$ROOT/old-build.log" 2>&1 || die "make build at $OLD; see $ROOT/old-build.log"
}

echo "$("$REPO/bin/banger" version 2>/dev/null | head -n1) vs $OLD; runs: $RUNS; release: $RELEASE; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# build SIDE NAME ARGS...: `banger image build NAME ARGS... --quiet` on
# that side; prints its wall time.
build() {
	local s=$1 name=$2 t0 t1
	shift 2
	t0=$(now)
	side "$s" image build "$name" "$@" --quiet >/dev/null || die "$s: banger image build $name $*"
	t1=$(now)
	elapsed "$t0" "$t1"
}

# compare LABEL NAME ARGS...: builds NAME from ARGS on both sides RUNS times,
# interleaved, the first side alternating; prints each run and the medians.
compare() {
	local label=$1 name=$2 i s t first size
	shift 2
	local nt=() ot=()
	for i in $(seq "$RUNS"); do
		first=new
		[ $((i % 2)) = 1 ] || first=old
		for s in $first $([ "$first" = new ] && echo old || echo new); do
			t=$(build "$s" "$name-$i" "$@" --no-cache)
			size=$(side "$s" image show --json "$name-$i" | jsonget size_bytes)
			side "$s" image rm "$name-$i" >/dev/null
			if [ "$s" = new ]; then nt+=("$t"); else ot+=("$t"); fi
			echo "run $i, $s: $(round "$t" 1) s; image $(mib "$size") MiB"
		done
	done
	local mn mo
	mn=$(printf '%s\n' "${nt[@]}" | median)
	mo=$(printf '%s\n' "${ot[@]}" | median)
	echo "$label: median this tree ${mn} s, $OLD ${mo} s, ratio this/old $(ratio "$mn" "$mo") (goal <= 1.10)"
}

bench_debian() {
	need_old
	echo "== debian: banger image build --from debian:$RELEASE --no-cache, this tree vs $OLD ($RUNS runs each, interleaved, the side that goes first alternating)"
	compare debian bench --from "debian:$RELEASE"
}

bench_oci() {
	need_old
	echo "== oci: banger image build --from docker-archive: --no-cache of a one-layer Debian $RELEASE image, this tree vs $OLD ($RUNS runs each, interleaved)"
	if [ ! -f "$OCI/image.tar" ]; then
		mkdir -p "$OCI"
		PKGS=$(sed -n 's/^var BasePackages = \[\]string{\(.*\)}$/\1/p' "$REPO/internal/image/debian.go" | tr -d '" ')
		[ -n "$PKGS" ] || die "could not read BasePackages from internal/image/debian.go"
		(cd "$OCI" && TMPDIR=$OCI mmdebstrap --mode=unshare --variant=minbase --include="$PKGS" "$RELEASE" "$OCI/rootfs.tar" "$MIRROR") \
			>"$ROOT/oci-mmdebstrap.log" 2>&1 || die "mmdebstrap for the oci part; see $ROOT/oci-mmdebstrap.log"
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
	fi
	compare oci oci --from "docker-archive:$OCI/image.tar"
}

bench_rebuild() {
	echo "== rebuild: first build (--no-cache) vs unchanged rebuilds from the build cache ($RUNS rebuilds), this tree"
	local first cached ct=() i t
	first=$(build new rb-first --from "debian:$RELEASE" --no-cache)
	[ "$(side new image show --json rb-first | jsonget cached)" = false ] || die "rb-first, built with --no-cache, says it came from the cache"
	echo "first: rb-first (--no-cache) $(round "$first" 1) s"
	for i in $(seq "$RUNS"); do
		t=$(build new rb-again --from "debian:$RELEASE")
		cached=$(side new image show --json rb-again | jsonget cached)
		[ "$cached" = true ] ||
			die "rebuild $i: rb-again (same source and inputs as rb-first) was built, not taken from the build cache (\"cached\": $cached)"
		ct+=("$t")
		echo "rebuild $i: rb-again $t s (cached: true)"
		side new image rm rb-again >/dev/null
	done
	side new image rm rb-first >/dev/null
	local mc
	mc=$(printf '%s\n' "${ct[@]}" | median 3)
	echo "rebuild: median cached ${mc} s, first $(round "$first" 1) s, ratio cached/first $(ratio "$mc" "$first") (goal <= 0.05)"
}

for p in "${parts[@]}"; do "bench_$p"; done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
