#!/usr/bin/env bash
# banger benchmarks, each a side-by-side comparison in one run (ratios):
#   boot   time to SSH and the guest agent: `banger vm create` vs the raw
#          QEMU command line banger generated, on the same image, RUNS
#          times each, interleaved with the side that goes first
#          alternating; both timers hold the same work: a copy of the disk,
#          the boot, the SSH banner and an answered agent ping
#   ls     `banger vm ls --json` wall time with 1,000 VMs in the store: 100
#          running (a live stand-in process each, so the daemon checks
#          their liveness as for real VMMs), 50 whose VMM died, the rest
#          stopped
#   clone  `banger vm create --no-start` from a 1 GiB vs an 8 GiB image, each
#          a file system full of real data (the default image's tree, the
#          8 GiB one with 6 GiB of random files added)
#   ping   vm.ping round trip over 100 pings; on the agent socket itself,
#          the raw line-protocol ping vs the session (yamux) ping bangerd
#          makes, 100 each, alternating (bench/agentrtt); and the delay the
#          "still running" reminder adds after ssh exits (ssh vs ssh --no-remind)
#   paths  time-to-SSH of a VM from the Debian-built image vs one from the
#          same tree built by the rootfs/OCI path (`image import` of its
#          tarball), interleaved, RUNS times each: both paths must behave alike
#   exec   `vm exec NAME true` vs `vm ssh NAME true`, interleaved, 20 each
#   cp     `vm cp` of a 256 MiB file into and out of a VM vs the same bytes
#          through `vm ssh NAME -- cat`, interleaved, 3 runs each way
#   mount  sequential read of a 256 MiB file through a shared folder
#          (virtio-fs, read-only) in a VM vs the same file on the host, and
#          vs a copy on the guest's own disk (virtio-blk: what the guest's
#          emulated CPU costs alone), dd with 1 MiB blocks timing itself
#          (the guest's page cache dropped before each guest run, the
#          host's kept: the bytes come from host memory every time), 3 runs
#          each, interleaved
#   coldboot cold boot, `vm create` to SSH and an answered agent ping, of
#          this tree (its image, kernel command line and runtime) vs banger at
#          commit OLD (default: the commit before the cold-boot cut of issue
#          11), each with its own daemon, state, image and bridge, both in the
#          namespace; RUNS times each, interleaved, the side that goes first
#          alternating; then systemd-analyze and the critical chain of sshd in
#          one guest of each (goal: ratio <= 0.5)
#   warm   warm templates: `image warm` (build time, size on disk); `vm
#          create` to SSH plus agent from the template vs `vm create --cold`
#          of the same image and shape (the default vCPU count, 1 GiB;
#          WARM_SHAPE to change it), interleaved, RUNS times each; 10
#          concurrent `vm create` from the template (median and slowest);
#          the summed Pss (/proc/PID/smaps_rollup) of PSS_VMS (10) idle
#          clones of a 1 GiB VM vs as many cold-booted ones
#   releases Debian 12 (bookworm, the default image) vs Debian 13 (trixie,
#          OpenSSH 10, whose clones restart sshd for their host key): each
#          image warmed with one shape, then `vm create` to SSH plus agent
#          from its template and `vm create --cold`, RUNS times each,
#          interleaved, the release that goes first alternating
#   startup how fast the CLI starts: `banger --help`, `banger version` and
#          `banger vm ls` against a minimal static Go binary, interleaved,
#          STARTUP_RUNS times each (bench/startup; goal: --help within 2x)
# Needs root, QEMU, python3, a built runtime (make runtime) and bin/ (make build).
# The daemon and VMs run in a network namespace this script creates.
# Usage: bench/run.sh [boot] [ls] [clone] [ping] [paths] [exec] [cp] [mount] [coldboot] [warm] [releases] [startup]   (default: boot ls clone ping startup)
#   OLD=<commit> for coldboot (its tree is checked out under BENCH_ROOT/old-src)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RUNS=${RUNS:-5}
ROOT=${BENCH_ROOT:-/tmp/bgr-bench}
NS=bgr-bench-$$
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(boot ls clone ping startup)

export XDG_CONFIG_HOME=$ROOT/config XDG_STATE_HOME=$ROOT/state XDG_DATA_HOME=$ROOT/data XDG_RUNTIME_DIR=$ROOT/run
export BANGER_RUNTIME_DIR=${BANGER_RUNTIME_DIR:-$REPO/runtime}
mkdir -p "$ROOT"
B="$REPO/bin/banger"
DB=$XDG_STATE_HOME/banger/banger.db
# A bridge of its own (two benches, or a bench and a test, must not share
# one): inside the namespace for the VMs, and on the host for the image
# build's sandbox network, which is removed again after the build.
BRIDGE=bgrbench$(( $$ % 100000 ))
mkdir -p "$XDG_CONFIG_HOME/banger"
printf '[network]\nbridge = "%s"\n' "$BRIDGE" >"$XDG_CONFIG_HOME/banger/config.toml"
remove_host_bridge() {
	ip link del "$BRIDGE" >/dev/null 2>&1 || true
	for fam in ip bridge netdev; do nft delete table "$fam" "banger-$BRIDGE" >/dev/null 2>&1 || true; done
}

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f\n", m}'; }
jsonget() { python3 -c 'import json,sys; v=json.load(sys.stdin); print(v[sys.argv[1]])' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a/b}'; }
ms() { awk -v s="$1" 'BEGIN {print s*1000}'; }
# elapsed CMD...: runs CMD, prints its wall time in seconds.
elapsed() {
	local t0 t1
	t0=$(now)
	"$@" >/dev/null
	t1=$(now)
	awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}'
}
wait_ssh() { # wait_ssh IP: until sshd sends its banner, inside the namespace
	until ip netns exec "$NS" timeout 1 bash -c "exec 3<>/dev/tcp/$1/22 && head -c4 <&3 | grep -q SSH-" 2>/dev/null; do sleep 0.1; done
}
wait_agent() { # wait_agent SOCKET: until the guest agent answers a ping on its virtio-serial socket, as bangerd asks it
	python3 - "$1" <<'PY'
import json, socket, sys, time
while True:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sys.argv[1])
        s.settimeout(1)
        while True:
            s.sendall(b'\n{"op":"ping","id":"bench"}\n')
            buf = b""
            try:
                while b"\n" not in buf or b'"bench"' not in buf:
                    d = s.recv(4096)
                    if not d:
                        raise OSError("closed")
                    buf += d
                for line in buf.split(b"\n"):
                    if b'"bench"' in line and json.loads(line).get("ok"):
                        sys.exit(0)
            except socket.timeout:
                pass
            time.sleep(0.25)
    except OSError:
        time.sleep(0.25)
PY
}

PIDS=$ROOT/standins.pids # the ls part's stand-in VMM processes
cleanup() {
	for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
	ip netns del "$NS" 2>/dev/null || true
	"$B" daemon stop >/dev/null 2>&1 || true # a daemon outside the namespace (image builds)
	remove_host_bridge
	if [ -n "${OLDBRIDGE:-}" ]; then
		OLDB daemon stop >/dev/null 2>&1 || true
		ip link del "$OLDBRIDGE" >/dev/null 2>&1 || true
		for fam in ip bridge netdev; do nft delete table "$fam" "banger-$OLDBRIDGE" >/dev/null 2>&1 || true; done
	fi
	if [ -f "$PIDS" ]; then
		xargs -r kill -9 <"$PIDS" 2>/dev/null || true
		rm -f "$PIDS"
	fi
}
trap cleanup EXIT

# The image build needs Debian's mirror, so it runs outside the namespace;
# startup and coldboot (which builds its own) need no default image.
needs_default=""
for p in "${parts[@]}"; do
	case $p in startup | coldboot) ;; *) needs_default=1 ;; esac
done
if [ -n "$needs_default" ] && ! "$B" image ls --json | grep -q '"name": "default"'; then
	"$B" image build default --from debian:bookworm
fi
# The releases part's second image: Debian 13.
if [[ " ${parts[*]} " == *" releases "* ]] && ! "$B" image ls --json | grep -q '"name": "trixie"'; then
	"$B" image build trixie --from debian:trixie
fi
# The paths part's second image: the default image's tree as a tarball,
# built again by the path OCI images take (BuildRootfs).
if [[ " ${parts[*]} " == *" paths "* ]] && ! "$B" image ls --json | grep -q '"name": "default-rootfs"'; then
	mnt=$(mktemp -d) && mount -o loop,ro "$("$B" image show --json default | jsonget path)" "$mnt"
	tar --numeric-owner --xattrs --xattrs-include='*' -C "$mnt" -cf "$ROOT/default-rootfs.tar" .
	umount "$mnt" && rmdir "$mnt"
	"$B" image import default-rootfs "$ROOT/default-rootfs.tar" --quiet
	rm -f "$ROOT/default-rootfs.tar"
fi
# The coldboot part's other side: banger at commit OLD, built in a git
# worktree of its own, with its own XDG dirs, bridge and (in the namespace)
# subnet. Its image is built here, outside the namespace, as ours is.
OLD=${OLD:-cf417c3}
OLDSRC=$ROOT/old-src
OLDBRIDGE=bgrbold$(($$ % 10000))
OLDENV=(XDG_CONFIG_HOME="$ROOT/old/config" XDG_STATE_HOME="$ROOT/old/state" XDG_DATA_HOME="$ROOT/old/data"
	XDG_RUNTIME_DIR="$ROOT/old/run" BANGER_RUNTIME_DIR="$OLDSRC/runtime")
OLDB() { env "${OLDENV[@]}" "$OLDSRC/bin/banger" "$@"; }
NOLD() { ip netns exec "$NS" env "${OLDENV[@]}" "$OLDSRC/bin/banger" "$@"; }
old_config() { # old_config [SUBNET]: the old side's config.toml
	mkdir -p "$ROOT/old/config/banger"
	printf '[network]\nbridge = "%s"\n%s' "$OLDBRIDGE" "${1:+subnet = \"$1\"
}" >"$ROOT/old/config/banger/config.toml"
}
if [[ " ${parts[*]} " == *" coldboot "* ]]; then
	if [ "$(git -C "$OLDSRC" rev-parse HEAD 2>/dev/null)" != "$(git rev-parse "$OLD^{commit}")" ]; then
		git worktree remove --force "$OLDSRC" 2>/dev/null || rm -rf "$OLDSRC"
		git worktree prune
		git worktree add --detach "$OLDSRC" "$OLD" >/dev/null
	fi
	make -C "$OLDSRC" build runtime >/dev/null
	old_config
	OLDB image ls --json | grep -q '"name": "default"' || OLDB image build default --from debian:bookworm
	OLDB daemon stop >/dev/null 2>&1 || true
	ip link del "$OLDBRIDGE" >/dev/null 2>&1 || true
	for fam in ip bridge netdev; do nft delete table "$fam" "banger-$OLDBRIDGE" >/dev/null 2>&1 || true; done
	# Ours, from this tree's customize.sh (the build cache makes it a link
	# when an earlier build had the same inputs).
	"$B" image ls --json | grep -q '"name": "coldboot"' && "$B" image rm coldboot >/dev/null
	"$B" image build coldboot --from debian:bookworm
	# Inside the namespace the old daemon gets a subnet ours never picks.
	old_config 10.231.77.0/24
fi
"$B" daemon stop >/dev/null
remove_host_bridge
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
N() { ip netns exec "$NS" "$@"; }

bench_boot() {
	echo "== boot: banger vm create vs the raw QEMU command line, to SSH and an answered agent ping ($RUNS runs each, interleaved, the side that goes first alternating)"
	# A never-booted disk and the exact argv banger uses for it.
	N "$B" vm create rawsrc --no-start --cpus 1 --memory 512 >/dev/null
	local dir ip tap agent
	dir=$(N "$B" vm show --json rawsrc | jsonget dir)
	cp --sparse=always "$dir/disk.ext4" "$ROOT/pristine.ext4"
	N "$B" vm start rawsrc >/dev/null
	N "$B" vm show --json rawsrc | python3 -c 'import json,sys; sys.stdout.write("\0".join(json.load(sys.stdin)["argv"]))' >"$ROOT/argv"
	# QEMU opens nothing by path (bangerd passes it descriptors), so the raw
	# side launches the same command line through rawvm, which opens them.
	N "$B" vm show --json rawsrc >"$ROOT/show.json"
	(cd "$REPO" && go build -o "$ROOT/rawvm" ./bench/rawvm)
	ip=$(N "$B" vm show --json rawsrc | jsonget ip)
	tap=$(N "$B" vm show --json rawsrc | jsonget tap)
	agent=$(N "$B" vm show --json rawsrc | jsonget agent_socket)
	N "$B" vm stop --force rawsrc >/dev/null
	mapfile -d '' argv <"$ROOT/argv"
	echo "raw command: ${argv[*]}" | cut -c1-300
	echo "raw side, timed: cp --sparse=always of the disk, ip tuntap add + link set master, the command above, until SSH's banner and an agent ping answer (banger's vm create: clone, keys, TAP, QEMU, SSH, agent)"

	local banger_times=() raw_times=() t
	banger_run() { # banger_run I: prints its time
		elapsed N "$B" vm create "boot-$1" --cpus 1 --memory 512
		N "$B" vm rm --force "boot-$1" >/dev/null
	}
	raw_run() { # raw_run: prints its time
		local t0 t1 pid
		rm -f "$dir/disk.ext4" "$dir"/*.sock
		sync
		t0=$(now)
		cp --sparse=always "$ROOT/pristine.ext4" "$dir/disk.ext4"
		N ip tuntap add dev "$tap" mode tap vnet_hdr
		N ip link set "$tap" master "$BRIDGE" up
		pid=$(N "$ROOT/rawvm" "$ROOT/show.json")
		wait_ssh "$ip"
		wait_agent "$agent"
		t1=$(now)
		kill -9 "$pid"
		sleep 0.5
		N ip link del "$tap"
		awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}'
	}
	for i in $(seq "$RUNS"); do
		if [ $((i % 2)) = 1 ]; then
			t=$(banger_run "$i") && banger_times+=("$t")
			t=$(raw_run) && raw_times+=("$t")
		else
			t=$(raw_run) && raw_times+=("$t")
			t=$(banger_run "$i") && banger_times+=("$t")
		fi
		echo "run $i: banger ${banger_times[-1]} s, raw ${raw_times[-1]} s"
	done
	N "$B" vm rm --force rawsrc >/dev/null
	local mb mr
	mb=$(printf '%s\n' "${banger_times[@]}" | median)
	mr=$(printf '%s\n' "${raw_times[@]}" | median)
	echo "boot: median time to SSH + agent banger ${mb} s, raw ${mr} s, ratio $(ratio "$mb" "$mr") (goal <= 1.05)"
}

bench_ls() {
	echo "== ls: banger vm ls --json with 1,000 VMs in the store (100 running, 50 whose VMM died, 850 stopped)"
	N "$B" daemon stop >/dev/null || true
	(cd "$REPO" && go run ./bench/seed -db "$DB" -image default -vms 1000 -running 100 -dead 50 -pids "$PIDS")
	local times=() n
	# The CLI reaches the daemon by its socket, so it runs outside the
	# namespace here: `ip netns exec` would add its own start-up to the figure.
	# The call from inside also makes sure the daemon (in the namespace) is
	# this build, so the CLI outside never restarts it outside.
	n=$(N "$B" vm ls --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
	for i in $(seq 21); do
		times+=("$(ms "$(elapsed "$B" vm ls --json)")")
	done
	echo "ls: $n VMs listed ($(N "$B" vm ls --json | python3 -c 'import json,sys; print(sum(v["state"]=="running" for v in json.load(sys.stdin)))') running), median $(printf '%s\n' "${times[@]}" | median) ms over 21 runs (goal <= 50 ms)"
	N "$B" daemon stop >/dev/null
	xargs -r kill -9 <"$PIDS" 2>/dev/null || true
	rm -f "$PIDS"
	python3 - "$DB" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("DELETE FROM leases WHERE vm_id LIKE 'bench%'")
db.execute("DELETE FROM vms WHERE id LIKE 'bench%'")
db.commit()
EOF
}

bench_clone() {
	echo "== clone: vm create --no-start from a 1 GiB vs an 8 GiB image, both full of data ($RUNS runs each, interleaved)"
	local src
	src=$(N "$B" image ls --json | python3 -c 'import json,sys; print([i["path"] for i in json.load(sys.stdin) if i["name"]=="default"][0])')
	N "$B" daemon stop >/dev/null || true
	for size in 1 8; do
		local img=$ROOT/img${size}g.ext4
		if [ ! -f "$img" ]; then
			# A file system full of data, as big as its name says: the
			# default image's tree in 1 GiB, and in 8 GiB with 6 GiB more.
			local mnt tree=$ROOT/tree
			rm -rf "$tree" && mkdir -p "$tree"
			mnt=$(mktemp -d) && mount -o loop,ro "$src" "$mnt"
			cp -a "$mnt/." "$tree/"
			umount "$mnt" && rmdir "$mnt"
			if [ "$size" = 8 ]; then
				mkdir -p "$tree/var/filler"
				for f in $(seq 6); do head -c 1G /dev/urandom >"$tree/var/filler/$f"; done
			fi
			mkfs.ext4 -q -F -L banger-root -d "$tree" "$img" "${size}G"
			rm -rf "$tree"
		fi
		python3 - "$DB" "img${size}g" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("DELETE FROM images WHERE name = ?", (sys.argv[2],))
db.commit()
EOF
		(cd "$REPO" && go run ./bench/seed -db "$DB" -image "img${size}g" -path "$img")
	done
	local t1s=() t8s=() t
	local order
	for i in $(seq "$RUNS"); do
		order="1 8"
		[ $((i % 2)) = 1 ] || order="8 1" # neither always goes first
		for size in $order; do
			t=$(elapsed N "$B" vm create "clone-$size-$i" --no-start --image "img${size}g" --disk 9G)
			if [ "$size" = 1 ]; then t1s+=("$t"); else t8s+=("$t"); fi
			N "$B" vm rm "clone-$size-$i" >/dev/null
		done
	done
	local m1 m8
	m1=$(printf '%s\n' "${t1s[@]}" | median)
	m8=$(printf '%s\n' "${t8s[@]}" | median)
	echo "clone: median vm create --no-start 1 GiB image ${m1} s, 8 GiB image ${m8} s, ratio $(ratio "$m8" "$m1") (goal <= 1.2)"
}

bench_ping() {
	echo "== ping: vm.ping round trip and the reminder's delay after ssh"
	N "$B" vm create pinger --cpus 1 --memory 512 >/dev/null
	local rtts=() walls=() t0 t1
	local out
	for i in $(seq 100); do
		# The CLI reaches the daemon by its socket: timed outside the
		# namespace, so `ip netns exec` is not in the figure.
		t0=$(now)
		out=$("$B" vm ping --json pinger)
		t1=$(now)
		rtts+=("$(jsonget rtt_ms <<<"$out")")
		walls+=("$(ms "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")")
	done
	echo "ping: agent round trip median $(printf '%s\n' "${rtts[@]}" | median) ms over 100 pings; whole \`banger vm ping\` (CLI process, RPC, ping) median $(printf '%s\n' "${walls[@]}" | median) ms"
	# The same channel without the daemon: the raw line-protocol ping (one
	# JSON line each way) against the session ping bangerd makes (a yamux
	# stream), on one connection to the agent socket, alternating, 100 ms
	# apart as the pings above are. QEMU serves one client at a time, so
	# the daemon stops meanwhile (its VM runs on); the next command starts it.
	local sock
	sock=$(N "$B" vm show --json pinger | jsonget agent_socket)
	(cd "$REPO" && go build -o "$ROOT/agentrtt" ./bench/agentrtt)
	N "$B" daemon stop >/dev/null
	"$ROOT/agentrtt" -n 100 -rounds 4 -gap 100ms "$sock" | sed 's/^/ping: on the agent socket, no daemon: /'
	# The reminder's cost, measured inside the CLI from ssh's exit to the
	# reminder printed (BANGER_DEBUG makes the CLI report it).
	local costs=()
	for i in $(seq 20); do
		costs+=("$(BANGER_DEBUG=1 N "$B" vm ssh pinger -- true 2>&1 >/dev/null | sed -n 's/^banger: reminder check took \([0-9.]*\) ms$/\1/p')")
	done
	echo "ping: the reminder adds a median $(printf '%s\n' "${costs[@]}" | median) ms after ssh exits, over 20 sessions (goal < 100 ms on top of the ping)"
	N "$B" vm rm --force pinger >/dev/null
}

bench_paths() {
	echo "== paths: time to SSH + agent from the Debian-built image vs the same tree built by the rootfs/OCI path ($RUNS runs each, interleaved)"
	local deb=() oci=()
	for i in $(seq "$RUNS"); do
		deb+=("$(elapsed N "$B" vm create "pd-$i" --image default --cpus 1 --memory 512)")
		N "$B" vm rm --force "pd-$i" >/dev/null
		oci+=("$(elapsed N "$B" vm create "po-$i" --image default-rootfs --cpus 1 --memory 512)")
		N "$B" vm rm --force "po-$i" >/dev/null
		echo "run $i: debian ${deb[-1]} s, rootfs/OCI path ${oci[-1]} s"
	done
	local md mo
	md=$(printf '%s\n' "${deb[@]}" | median)
	mo=$(printf '%s\n' "${oci[@]}" | median)
	echo "paths: median vm create (to SSH + agent) debian-built ${md} s, rootfs/OCI-built ${mo} s, ratio $(ratio "$mo" "$md")"
}

bench_exec() {
	echo "== exec: vm exec NAME true vs vm ssh NAME true (20 each, interleaved)"
	N "$B" vm create execer --cpus 1 --memory 512 >/dev/null
	local ex=() sh=()
	for i in $(seq 20); do
		# Both run inside the namespace (vm ssh needs the guest's address).
		ex+=("$(elapsed N "$B" vm exec execer -- true)")
		sh+=("$(elapsed N "$B" vm ssh --no-remind execer -- true)")
	done
	local me ms
	me=$(printf '%s\n' "${ex[@]}" | median)
	ms=$(printf '%s\n' "${sh[@]}" | median)
	echo "exec: median vm exec ${me} s, vm ssh ${ms} s, ratio $(ratio "$me" "$ms") (goal <= 0.3)"
	N "$B" vm rm --force execer >/dev/null
}

ssh_in() { N "$B" vm ssh --no-remind copier -- sh -c 'cat > /root/viassh' <"$1"; }
ssh_out() { N "$B" vm ssh --no-remind copier -- cat /root/viassh >"$1"; }

bench_cp() {
	echo "== cp: 256 MiB into and out of a VM, vm cp vs vm ssh -- cat (3 runs each way, interleaved)"
	N "$B" vm create copier --cpus 1 --memory 512 --disk 4G >/dev/null
	local f=$ROOT/cp-256m back=$ROOT/cp-back
	head -c 256M /dev/urandom >"$f"
	local cin=() sin=() cout=() sout=()
	for i in $(seq 3); do
		cin+=("$(elapsed N "$B" vm cp -q "$f" copier:/root/viacp)")
		sin+=("$(elapsed ssh_in "$f")")
		rm -f "$back"
		cout+=("$(elapsed N "$B" vm cp -q copier:/root/viacp "$back")")
		sout+=("$(elapsed ssh_out "$back.ssh")")
		cmp -s "$f" "$back" || { echo "cp: the copy out differs from the original" >&2; exit 1; }
		echo "run $i: in: vm cp ${cin[-1]} s, ssh cat ${sin[-1]} s; out: vm cp ${cout[-1]} s, ssh cat ${sout[-1]} s"
	done
	local a b c d
	a=$(printf '%s\n' "${cin[@]}" | median)
	b=$(printf '%s\n' "${sin[@]}" | median)
	c=$(printf '%s\n' "${cout[@]}" | median)
	d=$(printf '%s\n' "${sout[@]}" | median)
	echo "cp: into the VM median vm cp ${a} s, ssh cat ${b} s, speed ratio $(ratio "$b" "$a"); out of the VM vm cp ${c} s, ssh cat ${d} s, speed ratio $(ratio "$d" "$c") (goal >= 1)"
	rm -f "$f" "$back" "$back.ssh"
	N "$B" vm rm --force copier >/dev/null
}

ddsecs() { LC_ALL=C awk '/copied/ {print $(NF-3)}'; } # dd's own timing, in seconds

bench_mount() {
	echo "== mount: sequential read of 256 MiB through a shared folder (virtio-fs) vs on the host, dd bs=1M (3 runs each, interleaved)"
	local dir=$ROOT/mount-share
	mkdir -p "$dir"
	head -c 256M /dev/urandom >"$dir/f"
	N "$B" vm create sharer --cpus 1 --memory 512 --mount "$dir:/share:ro" >/dev/null
	N "$B" vm exec sharer -- cp /share/f /root/f # the guest disk's copy (not timed)
	local g=() d=() h=()
	for i in $(seq 3); do
		g+=("$(N "$B" vm exec sharer -- sh -c 'echo 3 >/proc/sys/vm/drop_caches; LC_ALL=C dd if=/share/f of=/dev/null bs=1M 2>&1' | ddsecs)")
		d+=("$(N "$B" vm exec sharer -- sh -c 'echo 3 >/proc/sys/vm/drop_caches; LC_ALL=C dd if=/root/f of=/dev/null bs=1M 2>&1' | ddsecs)")
		h+=("$(LC_ALL=C dd if="$dir/f" of=/dev/null bs=1M 2>&1 | ddsecs)")
		echo "run $i: through the mount ${g[-1]} s, the guest's disk ${d[-1]} s, on the host ${h[-1]} s"
	done
	local mg md mh
	mg=$(printf '%s\n' "${g[@]}" | median)
	md=$(printf '%s\n' "${d[@]}" | median)
	mh=$(printf '%s\n' "${h[@]}" | median)
	mibs() { awk -v s="$1" 'BEGIN {printf "%.0f", 256/s}'; }
	echo "mount: median 256 MiB read through the mount ${mg} s ($(mibs "$mg") MiB/s), from the guest's disk ${md} s ($(mibs "$md") MiB/s), on the host ${mh} s ($(mibs "$mh") MiB/s); time ratios mount/disk $(ratio "$mg" "$md"), mount/host $(ratio "$mg" "$mh")"
	N "$B" vm rm --force sharer >/dev/null
	rm -rf "$dir"
}

bench_coldboot() {
	echo "== coldboot: vm create to SSH + agent, this tree vs banger $OLD, each its own image ($RUNS runs each, interleaved, the side that goes first alternating)"
	local new_times=() old_times=() t
	new_run() { elapsed N "$B" vm create "cbn-$1" --image coldboot --cpus 1 --memory 512; }
	old_run() { elapsed NOLD vm create "cbo-$1" --cpus 1 --memory 512; }
	for i in $(seq "$RUNS"); do
		if [ $((i % 2)) = 1 ]; then
			t=$(new_run "$i") && new_times+=("$t")
			t=$(old_run "$i") && old_times+=("$t")
		else
			t=$(old_run "$i") && old_times+=("$t")
			t=$(new_run "$i") && new_times+=("$t")
		fi
		echo "run $i: this tree ${new_times[-1]} s, $OLD ${old_times[-1]} s (load $(cut -d' ' -f1 /proc/loadavg))"
		if [ "$i" != "$RUNS" ]; then
			N "$B" vm rm --force "cbn-$i" >/dev/null
			NOLD vm rm --force "cbo-$i" >/dev/null
		fi
	done
	# The last guest of each side, as it saw its boot.
	echo "-- this tree's guest:"
	N "$B" vm exec "cbn-$RUNS" -- sh -c 'systemd-analyze; systemd-analyze critical-chain ssh.service banger-vsock-pingd.service' | grep -v '^The time'
	echo "-- $OLD's guest:"
	NOLD vm exec "cbo-$RUNS" -- sh -c 'systemd-analyze; systemd-analyze critical-chain ssh.service banger-vsock-pingd.service' | grep -v '^The time'
	N "$B" vm rm --force "cbn-$RUNS" >/dev/null
	NOLD vm rm --force "cbo-$RUNS" >/dev/null
	NOLD daemon stop >/dev/null || true
	local mn mo
	mn=$(printf '%s\n' "${new_times[@]}" | median)
	mo=$(printf '%s\n' "${old_times[@]}" | median)
	echo "coldboot: median vm create to SSH + agent this tree ${mn} s, $OLD ${mo} s, ratio $(ratio "$mn" "$mo") (goal <= 0.5)"
}

bench_warm() {
	# The default vCPU count (2, what `vm create` gives without --cpus) and
	# 1 GiB; WARM_SHAPE overrides (e.g. "--cpus 1 --memory 1024").
	local shape n=${PSS_VMS:-10}
	read -ra shape <<<"${WARM_SHAPE:---memory 1024}"
	echo "== warm: template build; vm create from the template vs --cold ($RUNS runs each, interleaved; shape: ${shape[*]}); $n concurrent clones; Pss of $n clones vs $n cold-booted VMs"
	local t0 t1 tj
	t0=$(now)
	tj=$(N "$B" image warm default "${shape[@]}" --json)
	t1=$(now)
	echo "template: image warm $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s wall (reused: $(echo "$tj" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("reused", False))')), build $(echo "$tj" | jsonget build_seconds) s, $(echo "$tj" | jsonget size_bytes) bytes on disk ($(du -sh "$(echo "$tj" | jsonget dir)" | cut -f1))"
	# The build leaves up to a GiB of dirty pages (the template's RAM and
	# disk), whose writeback would load the host under the first runs.
	sync
	# Each VM is removed as soon as it is timed: one left running would
	# load the host while the other side is timed (a cold-booted guest
	# keeps its vCPUs busy for seconds after SSH answers).
	created() { # created NAME ARGS...: times vm create NAME ARGS, then removes it
		local t
		t=$(elapsed N "$B" vm create "$@")
		N "$B" vm rm --force "$1" >/dev/null
		echo "$t"
	}
	local warm=() cold=()
	for i in $(seq "$RUNS"); do
		if [ $((i % 2)) = 1 ]; then
			warm+=("$(created "w-$i" "${shape[@]}")")
			cold+=("$(created "c-$i" --cold "${shape[@]}")")
		else
			cold+=("$(created "c-$i" --cold "${shape[@]}")")
			warm+=("$(created "w-$i" "${shape[@]}")")
		fi
		echo "run $i: warm clone ${warm[-1]} s, cold boot ${cold[-1]} s"
	done
	local mw mc
	mw=$(printf '%s\n' "${warm[@]}" | median)
	mc=$(printf '%s\n' "${cold[@]}" | median)
	echo "warm: median vm create to SSH + agent: clone ${mw} s, cold ${mc} s, ratio $(ratio "$mw" "$mc") (goal <= 0.10, under 1 s)"

	local dir=$ROOT/concurrent
	rm -rf "$dir" && mkdir -p "$dir"
	for i in $(seq "$n"); do
		(elapsed N "$B" vm create "p-$i" "${shape[@]}" >"$dir/$i") &
	done
	wait
	local all
	all=$(cat "$dir"/*)
	echo "concurrent: $n vm creates from one template at once: median $(echo "$all" | median) s, slowest $(echo "$all" | sort -g | tail -1) s"
	pss() { # pss PREFIX: the summed Pss in KiB of the VMMs of VMs PREFIX-1..n
		local sum=0 pid
		for i in $(seq "$n"); do
			pid=$(N "$B" vm show --json "$1-$i" | jsonget pid)
			sum=$((sum + $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")))
		done
		echo "$sum"
	}
	sleep 10 # idle
	local pw pc
	pw=$(pss p)
	for i in $(seq "$n"); do N "$B" vm rm --force "p-$i" >/dev/null; done
	for i in $(seq "$n"); do
		(N "$B" vm create "q-$i" --cold "${shape[@]}" >/dev/null) &
	done
	wait
	sleep 10
	pc=$(pss q)
	for i in $(seq "$n"); do N "$B" vm rm --force "q-$i" >/dev/null; done
	echo "memory: Pss of $n idle clones $((pw / 1024)) MiB, of $n cold-booted VMs $((pc / 1024)) MiB, ratio $(ratio "$pw" "$pc") (goal <= 0.5)"
}

bench_releases() {
	local shape=(--cpus 1 --memory 512)
	echo "== releases: bookworm vs trixie, vm create to SSH + agent from a warm template and cold ($RUNS runs each, interleaved, the release going first alternating)"
	local rel t0
	for rel in default trixie; do
		t0=$(now)
		N "$B" image warm "$rel" "${shape[@]}" >/dev/null
		echo "image warm $rel: $(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}') s"
	done
	declare -A rel_times
	local i r order how
	for i in $(seq "$RUNS"); do
		order="default trixie"
		[ $((i % 2)) = 1 ] || order="trixie default"
		for how in clone cold; do
			for r in $order; do
				local flag=()
				[ "$how" = clone ] || flag=(--cold)
				rel_times[$r-$how]+="$(elapsed N "$B" vm create "$r-$how-$i" --image "$r" "${flag[@]}" "${shape[@]}") "
				N "$B" vm rm --force "$r-$how-$i" >/dev/null
			done
		done
		echo "run $i: bookworm clone $(echo "${rel_times[default-clone]}" | awk '{print $NF}') s, trixie clone $(echo "${rel_times[trixie-clone]}" | awk '{print $NF}') s, bookworm cold $(echo "${rel_times[default-cold]}" | awk '{print $NF}') s, trixie cold $(echo "${rel_times[trixie-cold]}" | awk '{print $NF}') s"
	done
	local m
	declare -A rel_med
	for m in default-clone trixie-clone default-cold trixie-cold; do
		rel_med[$m]=$(echo "${rel_times[$m]}" | tr ' ' '\n' | grep . | median)
	done
	echo "releases: median vm create from the template: bookworm ${rel_med[default-clone]} s, trixie ${rel_med[trixie-clone]} s, ratio trixie/bookworm $(ratio "${rel_med[trixie-clone]}" "${rel_med[default-clone]}")"
	echo "releases: median vm create --cold: bookworm ${rel_med[default-cold]} s, trixie ${rel_med[trixie-cold]} s, ratio trixie/bookworm $(ratio "${rel_med[trixie-cold]}" "${rel_med[default-cold]}")"
}

bench_startup() {
	# The daemon vm ls talks to starts inside the namespace.
	go build -o "$ROOT/startup" ./bench/startup
	N "$ROOT/startup" -banger "$B" -runs "${STARTUP_RUNS:-200}"
}

for p in "${parts[@]}"; do "bench_$p"; done
