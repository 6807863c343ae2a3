#!/bin/sh
# customize.sh
#
# Turns a freshly extracted root file system into a banger guest. banger runs
# it inside its build sandbox (package sandbox), where / is the image's root:
# it runs with the image's own /bin/sh and tools, as root of a user namespace
# without host privilege, and every path (symlinks included) resolves inside
# the image. It is idempotent: running it twice changes nothing the second
# time. It changes the root file system it runs in, so it refuses to run
# anywhere else (BANGER_IN_SANDBOX=1 is set by the sandbox).
#
# It is POSIX sh and runs under busybox: it needs no tool an image may lack
# beyond sh, cat, chmod, chown, cp, grep, ln, mkdir, mv, rm, sed, touch, tr.
#
# Environment:
#   BANGER_MODULES_DIR  the runtime's kernel/modules folder (read-only); its
#                       lib/modules/* is copied into the image (so udev and
#                       modprobe work)
#   BANGER_SSH_PUBKEY   optional public key line for /root/.ssh/authorized_keys
#   BANGER_AGENT_BIN    optional guest agent binary (banger-vsock-pingd)
#   BANGER_DNS          name server for a package install, when the image
#                       has none
#
# banger has already checked that the image is a root file system whose
# /bin/sh runs on this host's architecture.
#
# What the image gets:
#   - sshd, an init system, ip, kmod (and for systemd: D-Bus and udev),
#     installed with the image's own package manager only when missing:
#     apt (Debian, Ubuntu), dnf/microdnf/yum (Fedora, RHEL family) or apk
#     (Alpine). An image without one of those must already have them.
#   - systemd images: banger's units (banger-net, banger-ssh-keygen, the agent)
#     enabled, and the units that make a microVM wait at boot masked;
#     Alpine (apk) images: OpenRC services (banger-net, the agent, sshd) in
#     the runlevels, and busybox init's /etc/inittab
#   - sshd: root by key only; NO host keys (each VM's disk gets its own
#     /etc/ssh/ssh_host_ed25519_key from the daemon; as a fallback
#     banger-ssh-keygen.service runs `ssh-keygen -A`, and Alpine's sshd
#     service makes missing keys itself)
#   - an empty /etc/machine-id, so systemd makes one per VM at first boot
#   - banger-net: address, route, hostname and DNS from banger.ip=,
#     banger.gw=, banger.hostname=, banger.dns= on the kernel command line
#   - fstab with /dev/vda as / (ext4), and (systemd) none of the units that
#     make a microVM wait at boot (DHCP clients, wait-online, udev-settle, ...)
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
GUEST=$HERE/guest

log() { echo "customize: $*" >&2; }
die() {
	echo "customize: error: $*" >&2
	exit 1
}

[ "${BANGER_IN_SANDBOX:-}" = 1 ] ||
	die "customize.sh changes the root file system it runs in: banger runs it inside its build sandbox; never run it on a host"
[ -d /etc ] || die "the image has no /etc: it is not a root file system"
[ -r "$GUEST/banger-net" ] || die "missing $GUEST/banger-net"

has() { # has PATH... : true when any of the image paths exists
	for p in "$@"; do
		if [ -e "$p" ] || [ -L "$p" ]; then return 0; fi
	done
	return 1
}

# write FILE MODE: stdin to an image file, replacing it only when it changed
# (where the image has cmp to tell).
write() {
	dst=$1
	mkdir -p "$(dirname "$dst")"
	tmp=$dst.banger-tmp
	cat >"$tmp"
	chmod "$2" "$tmp"
	if [ -f "$dst" ] && [ ! -L "$dst" ] && command -v cmp >/dev/null 2>&1 && cmp -s "$tmp" "$dst"; then
		rm -f "$tmp"
	else
		mv -f "$tmp" "$dst"
	fi
}

# mask UNIT...: link to /dev/null, the way `systemctl mask` does, so it also
# works for units the image does not have (yet).
mask() {
	mkdir -p /etc/systemd/system
	for u in "$@"; do
		ln -sfn /dev/null "/etc/systemd/system/$u"
	done
}

# --- packages ---------------------------------------------------------------

# The image's own package manager, found by its files in the image.
pm="" pm_bin=""
if has /usr/bin/apt-get; then
	pm=apt pm_bin=apt-get
else
	for p in /usr/bin/dnf /usr/bin/dnf5 /usr/bin/microdnf /usr/bin/yum; do
		if has "$p"; then
			pm=dnf pm_bin=$p
			break
		fi
	done
	if [ -z "$pm" ]; then
		for p in /sbin/apk /usr/sbin/apk /bin/apk /usr/bin/apk; do
			if has "$p"; then
				pm=apk pm_bin=$p
				break
			fi
		done
	fi
fi

# Alpine has no systemd: apk images boot busybox init and OpenRC. So does an
# image without a package manager that has OpenRC and no systemd.
has_systemd() { has /lib/systemd/systemd /usr/lib/systemd/systemd; }
init=systemd
if [ "$pm" = apk ]; then
	init=openrc
elif [ -z "$pm" ] && ! has_systemd && has /sbin/openrc /usr/sbin/openrc; then
	init=openrc
fi

# lacking: what the image still needs, as words for package_names and
# describe. With OpenRC, /sbin/init is busybox (linked below when missing).
lacking() {
	l=""
	has /usr/sbin/sshd || l="$l sshd"
	if [ "$init" = systemd ]; then
		has_systemd || l="$l systemd"
		has /sbin/init /usr/sbin/init || l="$l init"
	else
		has /sbin/openrc /usr/sbin/openrc || l="$l openrc"
	fi
	# busybox's ip applet does what banger-net needs.
	has /sbin/ip /bin/ip /usr/sbin/ip /usr/bin/ip || l="$l ip"
	# systemd-logind needs D-Bus; without logind the ACPI power button that
	# `banger vm stop` presses is ignored and every stop waits for its timeout.
	if [ "$init" = systemd ]; then
		has /usr/bin/dbus-daemon /usr/bin/dbus-broker || l="$l dbus"
	fi
	# The runtime's modules may be compressed: busybox modprobe is not enough.
	has /bin/kmod /sbin/kmod /usr/bin/kmod /usr/sbin/kmod || l="$l kmod"
	if [ "$init" = systemd ]; then
		# Without udev no .device unit ever starts, and fstab's waits time out.
		has /lib/systemd/systemd-udevd /usr/lib/systemd/systemd-udevd || l="$l udev"
	fi
	echo "${l# }"
}

describe() { # describe "WORD...": the words as a reader's list
	d=""
	for w in $1; do
		case $w in
		sshd) w="sshd (OpenSSH server)" ;;
		init) w="/sbin/init" ;;
		ip) w="ip (iproute2)" ;;
		dbus) w="D-Bus (dbus-daemon or dbus-broker)" ;;
		udev) w="udev (systemd-udevd)" ;;
		openrc) w="OpenRC" ;;
		esac
		d="$d${d:+, }$w"
	done
	echo "$d"
}

# dnf images: dbus-broker since Fedora and RHEL 9 (and Amazon Linux 2023);
# older releases (RHEL/CentOS 7 and 8, Amazon Linux 2) have only dbus.
dnf_dbus() {
	id=$(sed -n 's/^ID=//p' /etc/os-release 2>/dev/null | tr -d '"'"'") || true
	ver=$(sed -n 's/^VERSION_ID=//p' /etc/os-release 2>/dev/null | tr -d '"'"'") || true
	major=${ver%%.*}
	case $major in '' | *[!0-9]*) major=0 ;; esac
	if [ "$id" != fedora ] && [ "$major" -gt 0 ] && [ "$major" -lt 9 ]; then
		echo dbus
	else
		echo dbus-broker
	fi
}

package_names() { # package_names "WORD...": the image's package names, once each
	names=""
	for w in $1; do
		case $pm:$w in
		apt:sshd | dnf:sshd) n=openssh-server ;;
		apk:sshd) n=openssh ;;
		*:systemd | dnf:init) n=systemd ;;
		apt:init) n=systemd-sysv ;;
		apt:ip | apk:ip) n=iproute2 ;;
		dnf:ip) n=iproute ;;
		apt:dbus) n=dbus ;;
		dnf:dbus) n=$(dnf_dbus) ;;
		apt:udev) n=udev ;;
		dnf:udev) n=systemd-udev ;;
		*) n=$w ;; # kmod, openrc
		esac
		case " $names " in *" $n "*) ;; *) names="$names $n" ;; esac
	done
	echo "${names# }"
}

# The image's own resolv.conf may be empty (an OCI image's is bind-mounted at
# run time): the install then uses the name server banger gives. It is
# replaced further down.
resolv_for_install() {
	if [ -L /etc/resolv.conf ] || ! grep -qs '^nameserver' /etc/resolv.conf; then
		if [ -n "${BANGER_DNS:-}" ]; then
			log "name server for the install: $BANGER_DNS"
			rm -f /etc/resolv.conf
			echo "nameserver $BANGER_DNS" >/etc/resolv.conf
		else
			log "no name server for the install (set network.dns in banger's config)"
		fi
	fi
}

missing=$(lacking)
if [ -n "$missing" ]; then
	[ -n "$pm" ] ||
		die "the image lacks $(describe "$missing") and has no package manager this script knows (apt, dnf or apk): the image must include them, or use a base image with apt, dnf or apk"
	pkgs=$(package_names "$missing")
	log "installing with $pm: $pkgs"
	resolv_for_install
	case $pm in
	apt)
		lists_empty=yes
		for f in /var/lib/apt/lists/*_Packages*; do
			if [ -e "$f" ]; then lists_empty=""; fi
		done
		if [ -n "$lists_empty" ]; then
			DEBIAN_FRONTEND=noninteractive apt-get update
		fi
		# shellcheck disable=SC2086 # a list of package names
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs
		apt-get clean
		rm -rf /var/lib/apt/lists/*
		;;
	dnf)
		# shellcheck disable=SC2086 # a list of package names
		"$pm_bin" install -y --setopt=install_weak_deps=False $pkgs
		"$pm_bin" clean all
		;;
	apk)
		# --no-cache: fetch the index for this install, keep nothing.
		# shellcheck disable=SC2086 # a list of package names
		"$pm_bin" add --no-cache $pkgs
		;;
	esac
	still=$(lacking)
	[ -z "$still" ] ||
		die "after installing $pkgs with $pm the image still lacks $(describe "$still"): check the image's package repositories"
fi

# OpenRC images boot busybox init (/etc/inittab below).
if [ "$init" = openrc ] && ! has /sbin/init; then
	has /bin/busybox || die "the image has no /sbin/init and no /bin/busybox to be it: add busybox to the image"
	log "/sbin/init: busybox init"
	mkdir -p /sbin
	ln -s /bin/busybox /sbin/init
fi

if [ "$init" = openrc ]; then
	has /etc/init.d/sshd ||
		die "the image has sshd but no OpenRC service for it (/etc/init.d/sshd): add openssh-server-openrc to the image"
fi

# --- kernel modules -----------------------------------------------------------

if [ -n "${BANGER_MODULES_DIR:-}" ]; then
	[ -d "$BANGER_MODULES_DIR/lib/modules" ] ||
		die "BANGER_MODULES_DIR=$BANGER_MODULES_DIR has no lib/modules (make-runtime.sh builds it)"
	moddir=/lib/modules
	[ -L /lib ] && moddir=/usr/lib/modules # merged /usr
	mkdir -p "$moddir"
	for src in "$BANGER_MODULES_DIR"/lib/modules/*; do
		[ -d "$src" ] || continue
		release=${src##*/}
		log "kernel modules $release"
		rm -rf "${moddir:?}/${release:?}"
		# Not -p or -a: the copies belong to the image's root, whoever owns
		# the runtime's files on the host (here they show as nobody).
		cp -R "$src" "$moddir/$release"
		# The image's own depmod: the runtime's indexes may be text-only
		# (made with busybox depmod on a host without kmod).
		if has /sbin/depmod /usr/sbin/depmod; then
			depmod -a "$release"
		fi
	done
else
	log "BANGER_MODULES_DIR not set: no kernel modules copied into the image"
fi

# --- ssh --------------------------------------------------------------------

log "sshd: root login by key only, no host keys in the image"
write /etc/ssh/sshd_config.d/banger.conf 0644 <<'EOF'
# Installed by banger. sshd keeps the first value it reads for a keyword, and
# this drop-in is included at the top of sshd_config.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
HostKey /etc/ssh/ssh_host_ed25519_key
EOF
if [ ! -e /etc/ssh/sshd_config ]; then
	echo 'Include /etc/ssh/sshd_config.d/*.conf' | write /etc/ssh/sshd_config 0644
elif ! grep -Eq '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config\.d/\*\.conf' /etc/ssh/sshd_config; then
	sed -i '1i Include /etc/ssh/sshd_config.d/*.conf' /etc/ssh/sshd_config
fi
rm -f /etc/ssh/ssh_host_*

if [ "$init" = systemd ]; then
	write /etc/systemd/system/banger-ssh-keygen.service 0644 <<'EOF'
# Installed by banger. Images ship without SSH host keys: the daemon writes a
# per-VM /etc/ssh/ssh_host_ed25519_key into each VM's disk before boot. This is
# the fallback for a disk that did not get one.
[Unit]
Description=banger: generate missing SSH host keys
# sshd waits for it, and sshd starts early (see its banger.conf drop-in): so
# does this, once the root file system (read-write from the initramfs) is
# there; skipped or not, it would otherwise hold sshd back until basic.target.
DefaultDependencies=no
After=-.mount
Before=ssh.service sshd.service shutdown.target
Conflicts=shutdown.target
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
EOF
fi

if [ -n "${BANGER_SSH_PUBKEY:-}" ]; then
	log "authorized_keys: adding ${BANGER_SSH_PUBKEY%% *} key"
	mkdir -p /root/.ssh
	touch /root/.ssh/authorized_keys
	if ! grep -qxF -- "$BANGER_SSH_PUBKEY" /root/.ssh/authorized_keys; then
		printf '%s\n' "$BANGER_SSH_PUBKEY" >>/root/.ssh/authorized_keys
	fi
	chown 0:0 /root/.ssh /root/.ssh/authorized_keys
	chmod 0700 /root/.ssh
	chmod 0600 /root/.ssh/authorized_keys
fi

# Alpine's sshd has no PAM, and refuses even key logins to an account whose
# password is locked ("!..."); "*" still allows no password login.
if [ "$init" = openrc ] && grep -qs '^root:!' /etc/shadow; then
	log "root account: no password, but not locked (sshd without PAM)"
	sed -i 's/^root:![^:]*:/root:*:/' /etc/shadow
fi

# --- identity: one per VM, made at boot -------------------------------------

log "empty machine-id; no random seed or hostname baked in"
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id /var/lib/systemd/random-seed \
	/var/lib/systemd/credential.secret
if has /var/lib/dbus; then ln -sfn /etc/machine-id /var/lib/dbus/machine-id; fi
echo localhost | write /etc/hostname 0644
# mmdebstrap leaves the build host's resolv.conf behind; the guest's comes
# from banger.dns= (banger-net) or stays empty.
rm -f /etc/resolv.conf
write /etc/resolv.conf 0644 <<'EOF'
# banger: banger-net writes the nameserver given as banger.dns= here at boot.
EOF
if ! grep -qs '^127\.0\.0\.1[[:space:]].*localhost' /etc/hosts; then
	write /etc/hosts 0644 <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
fi

# pam_env complains at every SSH login when the file is missing.
if [ ! -e /etc/default/locale ]; then
	mkdir -p /etc/default
	: >/etc/default/locale
fi

write /etc/fstab 0644 <<'EOF'
# Installed by banger: the root disk is virtio-blk /dev/vda. The initramfs
# mounts it read-write; the daemon checks it (e2fsck) when it clones an image.
/dev/vda	/	ext4	defaults,noatime,errors=remount-ro	0	0
EOF

# --- network and guest agent: the programs ------------------------------------

log "banger-net"
write /usr/local/sbin/banger-net 0755 <"$GUEST/banger-net"

# banger-vsock-pingd answers the daemon's pings over vsock (Firecracker) or a
# virtio-serial port (QEMU); it comes from the runtime bundle.
agent=""
if [ -n "${BANGER_AGENT_BIN:-}" ]; then
	[ -f "$BANGER_AGENT_BIN" ] || die "BANGER_AGENT_BIN=$BANGER_AGENT_BIN does not exist (make runtime builds it)"
	log "guest agent banger-vsock-pingd"
	write /usr/local/bin/banger-vsock-pingd 0755 <"$BANGER_AGENT_BIN"
	agent=banger-vsock-pingd
fi

if [ "$init" = systemd ]; then
	# --- systemd: network -----------------------------------------------------

	write /etc/systemd/system/banger-net.service 0644 <<'EOF'
# Installed by banger: address, default route, hostname and DNS from
# banger.ip=, banger.gw=, banger.hostname=, banger.dns= on the kernel command line.
[Unit]
Description=banger: network from the kernel command line
# Early, beside sysinit: the NIC's driver is loaded by the initramfs, and only
# the root file system (for /etc/hostname, /etc/resolv.conf) is needed, which
# the initramfs mounted read-write (systemd-remount-fs need not run first).
DefaultDependencies=no
After=-.mount systemd-journald.socket
Before=network-pre.target network.target network-online.target ssh.service sshd.service shutdown.target
Wants=network.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/banger-net
StartupCPUWeight=1000

[Install]
WantedBy=multi-user.target network-online.target
EOF
	# Keep the kernel's interface names (eth0): nothing to gain from renaming a
	# virtio-mmio NIC, and a rename racing banger-net would fail.
	mkdir -p /etc/systemd/network
	ln -sfn /dev/null /etc/systemd/network/99-default.link

	# Other network managers would wait for DHCP or carrier.
	mask networking.service ifup@.service ifupdown-pre.service ifupdown-wait-online.service \
		systemd-networkd.service systemd-networkd.socket systemd-networkd-wait-online.service \
		NetworkManager-wait-online.service

	# --- systemd: boot speed --------------------------------------------------

	# Nothing here exists in a microVM (no VGA console, no TPM, no hardware clock
	# worth waiting for, no need for periodic maintenance in a disposable VM), and
	# systemd-firstboot would prompt on the console because machine-id is empty.
	mask systemd-firstboot.service systemd-udev-settle.service getty@tty1.service getty-static.service \
		apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
		man-db.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
		systemd-pcrphase.service systemd-pcrphase-initrd.service \
		systemd-pcrphase-sysinit.service systemd-pcrmachine.service
	# No timer of the calendar either: when a warm template's clone sets its
	# clock, systemd recomputes every waiting timer and announces each on
	# D-Bus, which dbus-daemon hands to logind: 120-150 ms of a clone's CPU,
	# beside its identity, for a nightly dpkg backup and a daily /tmp sweep.
	mask dpkg-db-backup.timer systemd-tmpfiles-clean.timer
	# Under TCG every unit costs CPU the boot is short of. These load modules
	# whose device nodes kmod-static-nodes already provides (loaded on first
	# open), or record the boot in utmp; none is needed to reach SSH.
	mask modprobe@dm_mod.service modprobe@efi_pstore.service modprobe@drm.service \
		modprobe@loop.service modprobe@fuse.service systemd-update-utmp.service \
		systemd-update-utmp-runlevel.service
	# Debian 13's openssh-server makes host keys of every type at a first
	# boot (sshd-keygen.service), which a VM's boot always is (an empty
	# machine-id): an ordinary unit, it holds sshd back until basic.target
	# (measured under TCG: sshd 11-14 s after the network instead of 1 s),
	# and sshd here loads only the ed25519 key the daemon writes
	# (banger-ssh-keygen makes one if it is missing).
	mask sshd-keygen.service
	# Generators for what a microVM never has (GPT auto-discovery, LUKS,
	# dm-verity, dm-integrity, hibernation, offline updates): each is a
	# program systemd runs before it loads a single unit. The same link
	# masks a generator as a unit.
	# Also those that read only the kernel command line, which banger writes
	# (systemd.mask=, systemd.run=: debug, run), and /etc/rc.local, which
	# Debian does not ship (rc-local). The getty generator's one product here,
	# a login on the serial console (console=ttyS0), is enabled instead.
	# Since systemd 256 (Debian 13): the TPM2 generator (a microVM has no
	# TPM) and the SSH generator, which puts sshd on AF_UNIX and vsock
	# sockets (banger reaches sshd over the VM's network, and its own agent
	# over vsock or virtio-serial).
	# Each generator is a dynamically linked program: under TCG, ~0.2-0.5 s.
	mkdir -p /etc/systemd/system-generators
	for g in systemd-gpt-auto-generator systemd-cryptsetup-generator systemd-veritysetup-generator \
		systemd-integritysetup-generator systemd-hibernate-resume-generator \
		systemd-system-update-generator systemd-debug-generator systemd-run-generator \
		systemd-rc-local-generator systemd-getty-generator systemd-tpm2-generator \
		systemd-ssh-generator; do
		ln -sfn /dev/null "/etc/systemd/system-generators/$g"
	done
	if [ "$pm" = dnf ]; then
		# Fedora's: a periodic metadata download, and RSA/ECDSA host keys made
		# at every first boot (slow under TCG; banger-ssh-keygen covers a
		# missing ed25519 key).
		mask dnf-makecache.timer sshd-keygen@.service
	fi

	# The journal stays in memory: flushing it to /var/log/journal is on the
	# critical path to sshd, and a disposable VM's log is read while it runs (or
	# on its serial console).
	write /etc/systemd/journald.conf.d/banger.conf 0644 <<'EOF'
# Installed by banger: keep the journal in memory (faster boot, fewer writes).
[Journal]
Storage=volatile
EOF

	# sshd and the agent are what banger waits for: they start as soon as the
	# network is up (banger-net) and the root file system is writable, not
	# after sysinit.target and basic.target (udev's coldplug, tmpfiles, the
	# journal flush, D-Bus): those go on in parallel. Debian's ssh.service
	# also runs `sshd -t` before sshd: one more sshd start, and sshd refuses
	# a bad configuration itself. With one vCPU, units that run beside them
	# share it: until the boot ends (StartupCPUWeight) sshd, banger-net and
	# the agent get ten times the CPU share of any other unit (measured: sshd
	# started in 0.6-1.0 s instead of 2.3-3.4 s, vm create 11.1 s instead of
	# 14.8 s, medians of 3).
	ssh_unit=sshd.service
	if has /lib/systemd/system/ssh.service /usr/lib/systemd/system/ssh.service; then
		ssh_unit=ssh.service
	fi
	write "/etc/systemd/system/$ssh_unit.d/banger.conf" 0644 <<'EOF'
# Installed by banger: start sshd as soon as the network is up.
[Unit]
DefaultDependencies=no
Wants=banger-net.service
After=banger-net.service banger-ssh-keygen.service systemd-journald.socket
Before=shutdown.target
Conflicts=shutdown.target

[Service]
ExecStartPre=
StartupCPUWeight=1000
EOF

	# systemd runs its first-boot updates (system users, the hardware
	# database, the journal catalog, ldconfig) when /etc or /var is older
	# than /usr, that is at every VM's first boot: the image has them done
	# already (its packages' install scripts ran them). systemd-update-done
	# would write these after the first boot; an image update (apt) makes
	# /usr newer again and so runs them once more.
	mkdir -p /var
	touch /etc/.updated /var/.updated

	# --- systemd: guest agent and enabling ------------------------------------

	agent_unit=""
	if [ -n "$agent" ]; then
		[ -r "$GUEST/banger-vsock-pingd.service" ] || die "missing $GUEST/banger-vsock-pingd.service"
		write /etc/systemd/system/banger-vsock-pingd.service 0644 <"$GUEST/banger-vsock-pingd.service"
		agent_unit=banger-vsock-pingd.service
	fi

	log "enabling units"
	systemctl set-default multi-user.target >/dev/null
	# shellcheck disable=SC2086 # agent_unit is empty or one unit name
	systemctl enable banger-net.service banger-ssh-keygen.service $agent_unit >/dev/null 2>&1 ||
		systemctl enable banger-net.service banger-ssh-keygen.service $agent_unit
	systemctl enable "$ssh_unit" >/dev/null 2>&1 || systemctl enable "$ssh_unit"
	# The serial console's login (see the getty generator above).
	if has /lib/systemd/system/serial-getty@.service /usr/lib/systemd/system/serial-getty@.service; then
		systemctl enable serial-getty@ttyS0.service >/dev/null 2>&1 || systemctl enable serial-getty@ttyS0.service
	fi
	# Debian's socket-activated alternative would bypass the keygen ordering.
	if has /lib/systemd/system/ssh.socket /usr/lib/systemd/system/ssh.socket; then
		systemctl disable ssh.socket >/dev/null 2>&1 || true
	fi
else
	# --- OpenRC: services -----------------------------------------------------

	log "OpenRC services"
	write /etc/init.d/banger-net 0755 <<'EOF'
#!/sbin/openrc-run
# Installed by banger: address, default route, hostname and DNS from
# banger.ip=, banger.gw=, banger.hostname=, banger.dns= on the kernel command line.
description="banger: network from the kernel command line"

depend() {
	# In place of the networking service (sshd needs net).
	provide net
	before sshd
}

start() {
	ebegin "banger-net: network from the kernel command line"
	/usr/local/sbin/banger-net
	eend $?
}
EOF
	if [ -n "$agent" ]; then
		write /etc/init.d/banger-vsock-pingd 0755 <<'EOF'
#!/sbin/openrc-run
# Installed by banger: banger's guest agent. It serves the host's sessions
# on AF_VSOCK port 1024 (Firecracker) and on the virtio-serial port
# org.banger.agent (QEMU), whichever the VM has: ping, exec, cp and the
# guest clock, as root (like sshd).
description="banger guest agent (ping, exec, cp and clock for the host)"
command=/usr/local/bin/banger-vsock-pingd
command_background=yes
pidfile=/run/banger-vsock-pingd.pid

depend() {
	after modules mdev udev hwdrivers
}
EOF
	fi

	# busybox init starts OpenRC; a login prompt on the serial console, as
	# systemd gives on console=ttyS0; none on VGA consoles a microVM lacks.
	getty_line=""
	if has /sbin/getty; then
		getty_line="ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100"
	fi
	write /etc/inittab 0644 <<EOF
# Installed by banger: busybox init runs OpenRC.
::sysinit:/sbin/openrc sysinit
::sysinit:/sbin/openrc boot
::wait:/sbin/openrc default
$getty_line
# Firecracker's SendCtrlAltDel stops the VM this way (reboot=k).
::ctrlaltdel:/sbin/reboot
::shutdown:/sbin/openrc shutdown
EOF

	# QEMU's stop presses the ACPI power button; busybox acpid runs this.
	if has /etc/init.d/acpid; then
		write /etc/acpi/PWRF/00000080 0755 <<'EOF'
#!/bin/sh
# Installed by banger: the ACPI power button powers the VM off.
exec /sbin/poweroff
EOF
	else
		log "no /etc/init.d/acpid: the ACPI power button is ignored (stopping under QEMU waits for its timeout)"
	fi

	# rc_add SERVICE RUNLEVEL: add a service the image has, when not there yet.
	rc_add() {
		if has "/etc/init.d/$1" && ! has "/etc/runlevels/$2/$1"; then
			rc-update add "$1" "$2"
		fi
	}
	# rc_del SERVICE RUNLEVEL: take a service out of a runlevel.
	rc_del() {
		if has "/etc/runlevels/$2/$1"; then
			rc-update del "$1" "$2"
		fi
	}
	log "runlevels"
	rc_add devfs sysinit
	rc_add dmesg sysinit
	if has /etc/init.d/udev; then
		rc_add udev sysinit
		rc_add udev-trigger sysinit
	elif has /etc/init.d/mdev; then
		rc_add mdev sysinit
		rc_add hwdrivers sysinit
	else
		log "neither mdev nor udev OpenRC service: no device manager (modules for devices are not loaded)"
	fi
	rc_add killprocs shutdown
	rc_add mount-ro shutdown
	rc_add banger-net default
	rc_add sshd default
	if [ -n "$agent" ]; then rc_add banger-vsock-pingd default; fi
	rc_add acpid default
	# banger-net sets the hostname and the network.
	rc_del hostname boot
	rc_del networking boot
	rc_del networking default
fi

log "done"
