//go:build linux

package scripts

// Tests of customize.sh against small synthetic root filesystems whose
// programs are a static busybox copied from the host. They run the embedded
// script (WriteTo) the way builds do: in a build sandbox, with the image as
// its root (image.CustomizeTree). They run as root, to hand the test trees
// to the sandbox's subordinate ids.
//
// Fedora's and Alpine's repositories cannot be reached from the machines this
// runs on, so dnf, apk, apt-get and the tools their packages bring (systemctl,
// rc-update) are TEST DOUBLES here: small shell scripts, run by busybox inside
// the image, that record their arguments under /fake/calls and create the
// files the real packages would. They check what customize.sh asks of the
// image, not that a real Fedora or Alpine image then boots.

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	bimage "github.com/bangerhq/banger/internal/image"
	"github.com/bangerhq/banger/internal/sandbox"
	"github.com/bangerhq/banger/internal/subid"
	"github.com/bangerhq/banger/internal/testhost"
)

func TestMain(m *testing.M) {
	sandbox.Main()
	os.Exit(m.Run())
}

// needRoot skips the test unless it runs as root with a static busybox
// and subordinate ids on the host; it returns busybox's path.
func needRoot(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testhost.Skip(t, "customize.sh tests need root: they hand test trees to the build sandbox's ids (run go test ./scripts/ as root)")
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		testhost.Skip(t, "customize.sh tests need a static busybox (apt-get install busybox-static)")
	}
	f, err := elf.Open(bb)
	if err != nil {
		testhost.Skip(t, "customize.sh tests need a static busybox: %s: %v", bb, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			testhost.Skip(t, "customize.sh tests need a static busybox, and %s is dynamically linked (apt-get install busybox-static)", bb)
		}
	}
	return bb
}

// sandboxIDs are root's subordinate ids (make deps gives them).
func sandboxIDs(t *testing.T) subid.IDs {
	t.Helper()
	ids, err := subid.Lookup(subid.System, "root", 0)
	if err != nil {
		testhost.Skip(t, "the build sandbox needs root's subordinate ids: %v", err)
	}
	return ids
}

// applets are the busybox links every test image has: enough for the test
// doubles and for what customize.sh runs inside the image.
var applets = []string{"sh", "cat", "chmod", "cp", "echo", "ln", "ls", "mkdir", "rm", "touch", "grep", "sed"}

// image is a synthetic root filesystem.
type image struct {
	t   *testing.T
	dir string
}

// newImage makes an image with busybox as bin/busybox and its applets as
// links. merged: /bin, /sbin and /lib are links into /usr (Fedora, Debian);
// otherwise /bin/sh is an absolute link to /bin/busybox (Alpine).
func newImage(t *testing.T, merged bool, extra ...string) *image {
	bb := needRoot(t)
	im := &image{t: t, dir: t.TempDir()}
	bin := "/bin"
	if merged {
		for _, d := range []string{"bin", "sbin", "lib"} {
			im.mkdir("/usr/" + d)
			im.link("/"+d, "usr/"+d)
		}
		bin = "/usr/bin"
	}
	for _, d := range []string{"/etc", "/sbin", "/usr/bin", "/usr/sbin", "/root", "/fake/calls"} {
		im.mkdir(d)
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	im.write(bin+"/busybox", 0o755, string(b))
	for _, a := range append(slices.Clone(applets), extra...) {
		if merged {
			im.link(bin+"/"+a, "busybox")
		} else {
			im.link(bin+"/"+a, "/bin/busybox")
		}
	}
	return im
}

func (im *image) path(p string) string { return filepath.Join(im.dir, p) }

// handOver gives the tree to the build sandbox's ids (its root is the first
// subordinate id), as a build's own tree is, and returns them.
func (im *image) handOver() subid.IDs {
	im.t.Helper()
	ids := sandboxIDs(im.t)
	err := filepath.WalkDir(im.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(ids.SandboxUID()), int(ids.SandboxGID()))
	})
	if err != nil {
		im.t.Fatal(err)
	}
	return ids
}

func (im *image) mkdir(p string) {
	im.t.Helper()
	if err := os.MkdirAll(im.path(p), 0o755); err != nil {
		im.t.Fatal(err)
	}
}

func (im *image) write(p string, mode os.FileMode, content string) {
	im.t.Helper()
	im.mkdir(filepath.Dir(p))
	if err := os.WriteFile(im.path(p), []byte(content), mode); err != nil {
		im.t.Fatal(err)
	}
	if err := os.Chmod(im.path(p), mode); err != nil {
		im.t.Fatal(err)
	}
}

func (im *image) link(p, target string) {
	im.t.Helper()
	im.mkdir(filepath.Dir(p))
	if err := os.Symlink(target, im.path(p)); err != nil {
		im.t.Fatal(err)
	}
}

func (im *image) read(p string) string {
	im.t.Helper()
	b, err := os.ReadFile(im.path(p))
	if err != nil {
		im.t.Fatal(err)
	}
	return string(b)
}

// readlink is the target of the image's link p, or "" when p is no link.
func (im *image) readlink(p string) string {
	target, _ := os.Readlink(im.path(p))
	return target
}

func (im *image) exists(p string) bool {
	_, err := os.Lstat(im.path(p))
	return err == nil
}

// calls is what the test double NAME recorded, one call a line.
func (im *image) calls(name string) []string {
	b, err := os.ReadFile(im.path("/fake/calls/" + name + ".log"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		im.t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// snapshot lists every file of the image with its mode, owner, size and
// content hash (or link target), but not the test doubles' call logs.
func (im *image) snapshot() map[string]string {
	im.t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(im.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(im.dir, p)
		if rel == "fake/calls" {
			return filepath.SkipDir
		}
		// The sandbox's mount points, made when missing.
		if rel == "dev" || rel == "proc" || rel == "run" {
			return filepath.SkipDir
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v", fi.Mode())
		if st, ok := statOwner(fi); ok {
			desc += " " + st
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %d %x", len(b), sha256.Sum256(b))
		}
		snap[rel] = desc
		return nil
	})
	if err != nil {
		im.t.Fatal(err)
	}
	return snap
}

// statOwner is a file's uid:gid.
func statOwner(fi fs.FileInfo) (string, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", false
	}
	return fmt.Sprintf("%d:%d", st.Uid, st.Gid), true
}

// sameSnapshot fails the test with every difference between two snapshots.
func sameSnapshot(t *testing.T, before, after map[string]string) {
	t.Helper()
	var diffs []string
	for p, b := range before {
		if a, ok := after[p]; !ok {
			diffs = append(diffs, "removed "+p)
		} else if a != b {
			diffs = append(diffs, fmt.Sprintf("changed %s: %s => %s", p, b, a))
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			diffs = append(diffs, "added "+p)
		}
	}
	slices.Sort(diffs)
	if len(diffs) > 0 {
		t.Errorf("the image changed:\n  %s", strings.Join(diffs, "\n  "))
	}
}

// customize runs the embedded customize.sh on im in a build sandbox with
// the BANGER_* settings in env, and returns its output and error.
func customize(t *testing.T, im *image, env ...string) (string, error) {
	t.Helper()
	dir, err := WriteTo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ids := im.handOver()
	opts := bimage.CustomizeOptions{Scripts: dir, IDs: ids}
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		switch k {
		case "BANGER_AGENT_BIN":
			opts.AgentBinary = v
		case "BANGER_MODULES_DIR":
			opts.ModulesDir = v
		case "BANGER_SSH_PUBKEY":
			opts.SSHPubKey = v
		default:
			t.Fatalf("customize: unknown setting %s", e)
		}
	}
	var out strings.Builder
	opts.Log = &out
	err = bimage.CustomizeTree(context.Background(), im.dir, opts)
	return out.String(), err
}

// mustCustomize runs customize.sh and fails the test unless it succeeds.
func mustCustomize(t *testing.T, im *image, env ...string) string {
	t.Helper()
	out, err := customize(t, im, env...)
	if err != nil {
		t.Fatalf("customize.sh: %v\n%s", err, out)
	}
	return out
}

// mustFail runs customize.sh, which must fail with an error containing
// every one of wants, and must leave the image as it was.
func mustFail(t *testing.T, im *image, wants ...string) string {
	t.Helper()
	im.handOver()
	before := im.snapshot()
	out, err := customize(t, im)
	if err == nil {
		t.Fatalf("customize.sh succeeded\n%s", out)
	}
	line := err.Error()
	for _, w := range wants {
		if !strings.Contains(line, w) {
			t.Errorf("error lacks %q:\n%s\noutput:\n%s", w, line, out)
		}
	}
	sameSnapshot(t, before, im.snapshot())
	return line
}

// agentEnv makes a fake agent binary, kernel modules folder and key for the
// script's environment.
func agentEnv(t *testing.T) []string {
	dir := t.TempDir()
	agent := filepath.Join(dir, "banger-vsock-pingd")
	if err := os.WriteFile(agent, []byte("not really the agent\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	mods := filepath.Join(dir, "modules", "lib", "modules", "6.1.0-test", "kernel")
	if err := os.MkdirAll(mods, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mods, "virtio_test.ko"), []byte("module\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{
		"BANGER_AGENT_BIN=" + agent,
		"BANGER_MODULES_DIR=" + filepath.Join(dir, "modules"),
		"BANGER_SSH_PUBKEY=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBanger test@banger",
	}
}

func contains(t *testing.T, what, s string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, s)
		}
	}
}

// --- images it must refuse ------------------------------------------------------

func TestCustomizeNoPackageManager(t *testing.T) {
	// busybox only: no sshd, no systemd, no apt, dnf or apk.
	im := newImage(t, false)
	mustFail(t, im,
		"the image lacks sshd (OpenSSH server), systemd, /sbin/init, ip (iproute2), D-Bus (dbus-daemon or dbus-broker), kmod, udev (systemd-udevd) and",
		"no package manager this script knows (apt, dnf or apk)",
		"the image must include them, or use a base image with apt, dnf or apk")
}

func TestCustomizeNoPackageManagerNamesOnlyWhatIsMissing(t *testing.T) {
	im := newImage(t, true)
	// Everything a systemd guest needs but sshd and udev.
	for _, p := range []string{"/usr/lib/systemd/systemd", "/usr/sbin/ip", "/usr/bin/kmod", "/usr/bin/dbus-daemon"} {
		im.write(p, 0o755, "#!/bin/sh\n")
	}
	im.link("/usr/sbin/init", "../lib/systemd/systemd")
	line := mustFail(t, im, "the image lacks sshd (OpenSSH server), udev (systemd-udevd) and has no package manager")
	for _, present := range []string{"systemd,", "iproute2", "kmod", "D-Bus", "/sbin/init"} {
		if strings.Contains(line, present) {
			t.Errorf("error line names %q, which the image has:\n%s", present, line)
		}
	}
}

func TestCustomizeNoPackageManagerOpenRC(t *testing.T) {
	// OpenRC and no systemd: what an OpenRC guest needs is asked for.
	im := newImage(t, false)
	im.write("/sbin/openrc", 0o755, "#!/bin/sh\n")
	line := mustFail(t, im, "the image lacks sshd (OpenSSH server), ip (iproute2), kmod and has no package manager")
	if strings.Contains(line, "systemd") || strings.Contains(line, "D-Bus") {
		t.Errorf("an OpenRC image is asked for systemd parts:\n%s", line)
	}
}

// elfHeader is a 64-byte little-endian ELF64 executable header for machine.
func elfHeader(machine uint16) string {
	h := make([]byte, 64)
	copy(h, "\x7fELF")
	h[4] = 2  // ELFCLASS64
	h[5] = 1  // ELFDATA2LSB
	h[6] = 1  // EV_CURRENT
	h[16] = 2 // ET_EXEC
	h[18], h[19] = byte(machine), byte(machine>>8)
	h[20] = 1 // e_version
	h[52] = 64
	return string(h)
}

func TestCustomizeWrongArchitecture(t *testing.T) {
	var machine uint16
	var image, platform string
	switch runtime.GOARCH {
	case "amd64":
		machine, image, platform = 183, "aarch64", "linux/amd64"
	case "arm64":
		machine, image, platform = 62, "x86_64", "linux/arm64"
	default:
		t.Skipf("no foreign architecture chosen for a %s host", runtime.GOARCH)
	}
	host, err := exec.Command("uname", "-m").Output()
	if err != nil {
		t.Fatal(err)
	}
	im := newImage(t, false)
	// Alpine's layout: /bin/sh -> /bin/busybox, an absolute link that must
	// be followed inside the image (the host's /bin/busybox is the host's
	// architecture), to a program for another machine.
	im.write("/bin/busybox", 0o755, elfHeader(machine))
	mustFail(t, im, fmt.Sprintf("the image is built for %s but this host is %s: build from an image for %s",
		image, strings.TrimSpace(string(host)), platform))
}

func TestCustomizeNoShell(t *testing.T) {
	im := newImage(t, false)
	if err := os.Remove(im.path("/bin/sh")); err != nil {
		t.Fatal(err)
	}
	mustFail(t, im, "the image has no shell (/bin/sh) and cannot be customized")

	// A link to nothing is no shell either.
	im.link("/bin/sh", "/bin/dash")
	mustFail(t, im, "the image has no shell (/bin/sh) and cannot be customized")
}

// --- dnf (Fedora) -----------------------------------------------------------------

// fakeSystemctl is a TEST DOUBLE for systemctl: it records its arguments and
// makes the links that set-default, enable and disable would.
const fakeSystemctl = `#!/bin/sh
# TEST DOUBLE for systemctl (customize_test.go).
echo "systemctl $*" >>/fake/calls/systemctl.log
cmd=$1
shift
case $cmd in
set-default)
	ln -sfn "/usr/lib/systemd/system/$1" /etc/systemd/system/default.target ;;
enable)
	for u in "$@"; do
		if [ -e "/etc/systemd/system/$u" ]; then src=/etc/systemd/system/$u
		elif [ -e "/usr/lib/systemd/system/$u" ]; then src=/usr/lib/systemd/system/$u
		else echo "Failed to enable unit: Unit file $u does not exist." >&2; exit 1
		fi
		mkdir -p /etc/systemd/system/multi-user.target.wants
		ln -sfn "$src" "/etc/systemd/system/multi-user.target.wants/$u"
	done ;;
disable)
	for u in "$@"; do rm -f "/etc/systemd/system/multi-user.target.wants/$u"; done ;;
*)
	echo "fake systemctl: unexpected command $cmd" >&2; exit 1 ;;
esac
`

// fakeDnf is a TEST DOUBLE for dnf: it records its arguments and, for each
// package of an install, creates the files customize.sh looks for. An
// unknown package name fails, as with the real dnf.
const fakeDnf = `#!/bin/sh
# TEST DOUBLE for dnf (customize_test.go).
echo "dnf $*" >>/fake/calls/dnf.log
[ "$1" = install ] || exit 0
prog() { mkdir -p "${1%/*}"; echo '#!/bin/sh' >"$1"; chmod 755 "$1"; }
for a in "$@"; do
	case $a in
	install | -y | --setopt=install_weak_deps=False) ;;
	openssh-server)
		prog /usr/sbin/sshd
		mkdir -p /etc/ssh /usr/lib/systemd/system
		echo '#PermitRootLogin prohibit-password' >/etc/ssh/sshd_config
		echo '[Service]' >/usr/lib/systemd/system/sshd.service ;;
	systemd)
		prog /usr/lib/systemd/systemd
		ln -s ../lib/systemd/systemd /usr/sbin/init
		mkdir -p /etc/systemd/system
		cp /fake/systemctl /usr/bin/systemctl ;;
	iproute) prog /usr/sbin/ip ;;
	kmod) prog /usr/bin/kmod ;;
	dbus-broker) prog /usr/bin/dbus-broker ;;
	dbus) prog /usr/bin/dbus-daemon ;;
	systemd-udev) prog /usr/lib/systemd/systemd-udevd ;;
	*) echo "No match for argument: $a" >&2; exit 1 ;;
	esac
done
`

// newDnfImage is a Fedora-like image (merged /usr) with a fake dnf and
// nothing a banger guest needs.
func newDnfImage(t *testing.T, osRelease string) *image {
	im := newImage(t, true)
	im.write("/etc/os-release", 0o644, osRelease)
	im.write("/usr/bin/dnf", 0o755, fakeDnf)
	im.write("/fake/systemctl", 0o755, fakeSystemctl)
	return im
}

const fedora = "NAME=\"Fedora Linux\"\nID=fedora\nVERSION_ID=40\n"

func TestCustomizeDnf(t *testing.T) {
	im := newDnfImage(t, fedora)
	mustCustomize(t, im, agentEnv(t)...)

	want := []string{
		"dnf install -y --setopt=install_weak_deps=False openssh-server systemd iproute dbus-broker kmod systemd-udev",
		"dnf clean all",
	}
	if got := im.calls("dnf"); !slices.Equal(got, want) {
		t.Errorf("dnf calls:\n got %q\nwant %q", got, want)
	}
	sc := strings.Join(im.calls("systemctl"), "\n")
	contains(t, "systemctl calls", sc,
		"systemctl set-default multi-user.target",
		"systemctl enable banger-net.service banger-ssh-keygen.service banger-vsock-pingd.service",
		"systemctl enable sshd.service")
	for _, u := range []string{"banger-net.service", "banger-ssh-keygen.service", "banger-vsock-pingd.service", "sshd.service"} {
		if !im.exists("/etc/systemd/system/multi-user.target.wants/" + u) {
			t.Errorf("%s is not enabled", u)
		}
	}
	for _, u := range []string{"dnf-makecache.timer", "sshd-keygen@.service", "systemd-networkd.service", "getty@tty1.service"} {
		if got := im.readlink("/etc/systemd/system/" + u); got != "/dev/null" {
			t.Errorf("%s is not masked (link to %q)", u, got)
		}
	}
	checkBootCuts(t, im, "sshd.service")
	contains(t, "sshd_config", im.read("/etc/ssh/sshd_config"), "Include /etc/ssh/sshd_config.d/*.conf\n#PermitRootLogin")
	contains(t, "banger.conf", im.read("/etc/ssh/sshd_config.d/banger.conf"), "PermitRootLogin prohibit-password")
	contains(t, "authorized_keys", im.read("/root/.ssh/authorized_keys"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBanger")
	contains(t, "the agent", im.read("/usr/local/bin/banger-vsock-pingd"), "not really the agent")
	contains(t, "kernel modules", im.read("/usr/lib/modules/6.1.0-test/kernel/virtio_test.ko"), "module")
	contains(t, "fstab", im.read("/etc/fstab"), "/dev/vda\t/\text4")
	// A systemd image gets no OpenRC services.
	if im.exists("/etc/init.d/banger-net") || im.exists("/etc/inittab") {
		t.Error("a systemd image got OpenRC files")
	}
}

func TestCustomizeDnfOlderRHELGetsDbus(t *testing.T) {
	im := newDnfImage(t, "NAME=\"Red Hat Enterprise Linux\"\nID=\"rhel\"\nVERSION_ID=\"8.9\"\n")
	mustCustomize(t, im)
	want := "dnf install -y --setopt=install_weak_deps=False openssh-server systemd iproute dbus kmod systemd-udev"
	if got := im.calls("dnf"); len(got) == 0 || got[0] != want {
		t.Errorf("dnf calls:\n got %q\nwant %q first", got, want)
	}
}

func TestCustomizeDnfIdempotent(t *testing.T) {
	im := newDnfImage(t, fedora)
	env := agentEnv(t)
	mustCustomize(t, im, env...)
	before := im.snapshot()
	mustCustomize(t, im, env...)
	sameSnapshot(t, before, im.snapshot())
	if got := im.calls("dnf"); len(got) != 2 {
		t.Errorf("dnf was called again on the second run: %q", got)
	}
}

func TestCustomizeDnfStillMissing(t *testing.T) {
	// A dnf that "installs" nothing: the script must say so, not go on.
	im := newDnfImage(t, fedora)
	im.write("/usr/bin/dnf", 0o755, "#!/bin/sh\n# TEST DOUBLE for a dnf that installs nothing.\necho \"dnf $*\" >>/fake/calls/dnf.log\n")
	out, err := customize(t, im)
	if err == nil {
		t.Fatalf("customize.sh succeeded:\n%s", out)
	}
	contains(t, "output", out, "customize: error: after installing openssh-server systemd iproute dbus-broker kmod systemd-udev with dnf the image still lacks sshd (OpenSSH server), systemd,")
}

// --- apk (Alpine) -----------------------------------------------------------------

// fakeRcUpdate is a TEST DOUBLE for OpenRC's rc-update: it records its
// arguments and adds or removes the runlevel link. Like the real one it
// refuses a service the image does not have; unlike it, it also refuses to
// add a service twice, so a test sees a needless call.
const fakeRcUpdate = `#!/bin/sh
# TEST DOUBLE for rc-update (customize_test.go).
echo "rc-update $*" >>/fake/calls/rc-update.log
case $1 in
add)
	[ -e "/etc/init.d/$2" ] || { echo "rc-update: service $2 does not exist" >&2; exit 1; }
	mkdir -p "/etc/runlevels/$3"
	ln -s "/etc/init.d/$2" "/etc/runlevels/$3/$2" ;;
del)
	rm "/etc/runlevels/$3/$2" ;;
*)
	echo "fake rc-update: unexpected $1" >&2; exit 1 ;;
esac
`

// fakeApk is a TEST DOUBLE for apk. "openrc" also brings the services of
// busybox-openrc (mdev, hwdrivers, acpid) and openssh-server-openrc (sshd),
// as Alpine's install_if does, and enables hostname in the boot runlevel.
const fakeApk = `#!/bin/sh
# TEST DOUBLE for apk (customize_test.go).
echo "apk $*" >>/fake/calls/apk.log
[ "$1" = add ] || exit 0
prog() { mkdir -p "${1%/*}"; echo '#!/bin/sh' >"$1"; chmod 755 "$1"; }
for a in "$@"; do
	case $a in
	add | --no-cache) ;;
	openrc)
		prog /sbin/openrc
		prog /sbin/openrc-run
		cp /fake/rc-update /sbin/rc-update
		for s in devfs dmesg hostname networking killprocs mount-ro mdev hwdrivers acpid sshd; do
			prog /etc/init.d/$s
		done
		mkdir -p /etc/runlevels/sysinit /etc/runlevels/boot /etc/runlevels/default /etc/runlevels/shutdown
		ln -s /etc/init.d/hostname /etc/runlevels/boot/hostname ;;
	openssh)
		prog /usr/sbin/sshd
		mkdir -p /etc/ssh
		echo '#PermitRootLogin prohibit-password' >/etc/ssh/sshd_config ;;
	iproute2) prog /sbin/ip ;;
	kmod) prog /bin/kmod ;;
	*) echo "ERROR: unable to select packages: $a" >&2; exit 1 ;;
	esac
done
`

// newApkImage is an Alpine-like image (no merged /usr, /bin/sh an absolute
// link) with a fake apk, a locked root account and no /sbin/init.
func newApkImage(t *testing.T) *image {
	im := newImage(t, false)
	im.link("/sbin/getty", "/bin/busybox")
	im.write("/etc/os-release", 0o644, "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.0\n")
	im.write("/etc/shadow", 0o640, "root:!::0:::::\nbin:!::0:::::\n")
	im.write("/sbin/apk", 0o755, fakeApk)
	im.write("/fake/rc-update", 0o755, fakeRcUpdate)
	return im
}

func TestCustomizeApk(t *testing.T) {
	im := newApkImage(t)
	mustCustomize(t, im, agentEnv(t)...)

	want := []string{"apk add --no-cache openssh openrc iproute2 kmod"}
	if got := im.calls("apk"); !slices.Equal(got, want) {
		t.Errorf("apk calls:\n got %q\nwant %q", got, want)
	}
	rc := im.calls("rc-update")
	for _, c := range []string{
		"rc-update add devfs sysinit", "rc-update add dmesg sysinit",
		"rc-update add mdev sysinit", "rc-update add hwdrivers sysinit",
		"rc-update add killprocs shutdown", "rc-update add mount-ro shutdown",
		"rc-update add banger-net default", "rc-update add sshd default",
		"rc-update add banger-vsock-pingd default", "rc-update add acpid default",
		"rc-update del hostname boot",
	} {
		if !slices.Contains(rc, c) {
			t.Errorf("no %q in the rc-update calls %q", c, rc)
		}
	}
	for _, c := range rc {
		if strings.Contains(c, "add hostname") || strings.Contains(c, "add networking") {
			t.Errorf("unwanted call %q", c)
		}
	}
	for _, l := range []string{"default/banger-net", "default/sshd", "default/banger-vsock-pingd", "sysinit/devfs", "sysinit/mdev"} {
		if !im.exists("/etc/runlevels/" + l) {
			t.Errorf("no /etc/runlevels/%s", l)
		}
	}
	if im.exists("/etc/runlevels/boot/hostname") {
		t.Error("hostname is still in the boot runlevel")
	}

	net := im.read("/etc/init.d/banger-net")
	if !strings.HasPrefix(net, "#!/sbin/openrc-run\n") {
		t.Errorf("banger-net service is no openrc-run script:\n%s", net)
	}
	contains(t, "banger-net service", net, "provide net", "/usr/local/sbin/banger-net")
	contains(t, "banger-vsock-pingd service", im.read("/etc/init.d/banger-vsock-pingd"),
		"#!/sbin/openrc-run\n", "command=/usr/local/bin/banger-vsock-pingd", "command_background=yes", "pidfile=")
	if fi, err := os.Stat(im.path("/etc/init.d/banger-net")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("banger-net service mode: %v %v", fi.Mode(), err)
	}
	contains(t, "banger-net", im.read("/usr/local/sbin/banger-net"), "banger.ip=")
	contains(t, "inittab", im.read("/etc/inittab"),
		"::sysinit:/sbin/openrc sysinit\n", "::wait:/sbin/openrc default\n",
		"ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100\n", "::shutdown:/sbin/openrc shutdown\n")
	contains(t, "acpi power button handler", im.read("/etc/acpi/PWRF/00000080"), "poweroff")
	if got := im.readlink("/sbin/init"); got != "/bin/busybox" {
		t.Errorf("/sbin/init links to %q, want /bin/busybox", got)
	}
	contains(t, "shadow", im.read("/etc/shadow"), "root:*::0:::::\n", "bin:!::0:::::\n")
	contains(t, "sshd_config", im.read("/etc/ssh/sshd_config"), "Include /etc/ssh/sshd_config.d/*.conf\n")
	// An OpenRC image gets no systemd units.
	if im.exists("/etc/systemd") {
		t.Error("an OpenRC image got /etc/systemd")
	}
}

func TestCustomizeApkIdempotent(t *testing.T) {
	im := newApkImage(t)
	env := agentEnv(t)
	mustCustomize(t, im, env...)
	calls := len(im.calls("rc-update"))
	before := im.snapshot()
	mustCustomize(t, im, env...)
	sameSnapshot(t, before, im.snapshot())
	if got := im.calls("apk"); len(got) != 1 {
		t.Errorf("apk was called again on the second run: %q", got)
	}
	if got := im.calls("rc-update"); len(got) != calls {
		t.Errorf("rc-update was called again on the second run: %q", got[calls:])
	}
}

// --- apt (Debian, Ubuntu) ---------------------------------------------------------

// fakeAptGet is a TEST DOUBLE for apt-get, for a Debian container image that
// lacks what a banger guest needs and has no package lists yet. (The real apt
// path, a Debian image built by mmdebstrap, is booted by the e2e tests.)
const fakeAptGet = `#!/bin/sh
# TEST DOUBLE for apt-get (customize_test.go).
echo "apt-get $*" >>/fake/calls/apt-get.log
prog() { mkdir -p "${1%/*}"; echo '#!/bin/sh' >"$1"; chmod 755 "$1"; }
case $1 in
update)
	echo list >/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages
	exit 0 ;;
install) ;;
*) exit 0 ;;
esac
[ -e /var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages ] || {
	echo "E: Unable to locate package $4" >&2; exit 100; }
for a in "$@"; do
	case $a in
	install | -y | --no-install-recommends) ;;
	openssh-server)
		prog /usr/sbin/sshd
		mkdir -p /etc/ssh /usr/lib/systemd/system
		echo '#PermitRootLogin prohibit-password' >/etc/ssh/sshd_config
		echo '[Service]' >/usr/lib/systemd/system/ssh.service
		echo '[Socket]' >/usr/lib/systemd/system/ssh.socket ;;
	systemd)
		prog /usr/lib/systemd/systemd
		mkdir -p /etc/systemd/system
		cp /fake/systemctl /usr/bin/systemctl ;;
	systemd-sysv) ln -s ../lib/systemd/systemd /usr/sbin/init ;;
	iproute2) prog /usr/bin/ip ;;
	kmod) prog /usr/bin/kmod ;;
	dbus) prog /usr/bin/dbus-daemon ;;
	udev) prog /usr/lib/systemd/systemd-udevd ;;
	*) echo "E: Unable to locate package $a" >&2; exit 100 ;;
	esac
done
`

func TestCustomizeApt(t *testing.T) {
	im := newImage(t, true, "env")
	im.write("/usr/bin/apt-get", 0o755, fakeAptGet)
	im.write("/fake/systemctl", 0o755, fakeSystemctl)
	im.mkdir("/var/lib/apt/lists/partial")
	mustCustomize(t, im)

	want := []string{
		"apt-get update",
		"apt-get install -y --no-install-recommends openssh-server systemd systemd-sysv iproute2 dbus kmod udev",
		"apt-get clean",
	}
	if got := im.calls("apt-get"); !slices.Equal(got, want) {
		t.Errorf("apt-get calls:\n got %q\nwant %q", got, want)
	}
	if entries, err := os.ReadDir(im.path("/var/lib/apt/lists")); err != nil || len(entries) != 0 {
		t.Errorf("apt lists left after the install: %v %v", entries, err)
	}
	sc := strings.Join(im.calls("systemctl"), "\n")
	contains(t, "systemctl calls", sc, "systemctl enable ssh.service", "systemctl disable ssh.socket")
	checkBootCuts(t, im, "ssh.service")

	// Now complete, like a Debian image from mmdebstrap: nothing installed,
	// nothing cleaned, the package lists it has are kept.
	im.write("/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages", 0o644, "list\n")
	mustCustomize(t, im)
	if got := im.calls("apt-get"); len(got) != len(want) {
		t.Errorf("apt-get was called again: %q", got[len(want):])
	}
	if !im.exists("/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages") {
		t.Error("the second run removed the image's package lists")
	}
}

// checkBootCuts checks what makes a systemd image reach SSH sooner: sshd
// (sshUnit) starts once the network is up, without `sshd -t` first, and
// the key fallback it waits for does not wait for basic.target, and
// Debian 13's first-boot key maker, which does, is masked; the first-boot
// updates are marked done; the generators a microVM never needs are masked.
func checkBootCuts(t *testing.T, im *image, sshUnit string) {
	t.Helper()
	contains(t, sshUnit+" drop-in", im.read("/etc/systemd/system/"+sshUnit+".d/banger.conf"),
		"DefaultDependencies=no\n", "After=banger-net.service banger-ssh-keygen.service", "ExecStartPre=\n")
	contains(t, "banger-ssh-keygen.service", im.read("/etc/systemd/system/banger-ssh-keygen.service"),
		"DefaultDependencies=no\n", "Before=ssh.service sshd.service")
	for _, f := range []string{"/etc/.updated", "/var/.updated"} {
		if !im.exists(f) {
			t.Errorf("%s is missing: every VM's first boot would run systemd's update units", f)
		}
	}
	for _, g := range []string{"systemd-gpt-auto-generator", "systemd-cryptsetup-generator", "systemd-hibernate-resume-generator",
		"systemd-tpm2-generator", "systemd-ssh-generator"} {
		if got := im.readlink("/etc/systemd/system-generators/" + g); got != "/dev/null" {
			t.Errorf("generator %s is not masked (link to %q)", g, got)
		}
	}
	// Debian 13's first-boot key maker would hold sshd until basic.target.
	if got := im.readlink("/etc/systemd/system/sshd-keygen.service"); got != "/dev/null" {
		t.Errorf("sshd-keygen.service is not masked (link to %q)", got)
	}
}

// --- banger-net under busybox ---------------------------------------------------------

// banger-net is the same script for systemd and OpenRC images, and on Alpine
// its shell, ip, grep and sed are busybox's. Run it that way in a network and
// UTS namespace, with a made-up /proc/cmdline and /sys/class/net.
func TestBangerNetBusybox(t *testing.T) {
	im := newImage(t, false, "hostname", "ip", "sleep")
	if _, err := exec.LookPath("unshare"); err != nil {
		testhost.Skip(t, "needs unshare (util-linux)")
	}
	hostIP, err := exec.LookPath("ip")
	if err != nil {
		testhost.Skip(t, "needs ip (iproute2) on the host to make the test's interface")
	}
	b, err := os.ReadFile("guest/banger-net")
	if err != nil {
		t.Fatal(err)
	}
	im.write("/usr/local/sbin/banger-net", 0o755, string(b))
	im.write("/proc/cmdline", 0o444, "console=ttyS0 root=/dev/vda banger.ip=10.11.12.13/24 banger.gw=10.11.12.1 banger.hostname=bb-guest banger.dns=10.11.12.1\n")
	im.mkdir("/sys/class/net/lo")
	im.mkdir("/sys/class/net/eth0/device")
	im.write("/etc/hosts", 0o644, "127.0.0.1\tlocalhost\n")

	script := `set -e
"$IP" link add eth0 type veth peer name eth1
chroot "$ROOT" /usr/local/sbin/banger-net
echo "--- addr"
"$IP" -o -4 addr show dev eth0
echo "--- route"
"$IP" route show default
echo "--- hostname"
hostname
`
	cmd := exec.Command("unshare", "--net", "--uts", "sh", "-c", script)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "IP=" + hostIP, "ROOT=" + im.dir}
	out, err := cmd.CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "Operation not permitted") || strings.Contains(string(out), "unshare failed") {
			testhost.Skip(t, "cannot make namespaces here: %s", out)
		}
		t.Fatalf("banger-net under busybox: %v\n%s", err, out)
	}
	contains(t, "output", string(out),
		"banger-net: hostname bb-guest",
		"banger-net: eth0: address 10.11.12.13/24",
		"banger-net: eth0: default route via 10.11.12.1",
		"inet 10.11.12.13/24",
		"default via 10.11.12.1 dev eth0",
		"--- hostname\nbb-guest\n")
	contains(t, "/etc/hostname", im.read("/etc/hostname"), "bb-guest\n")
	contains(t, "/etc/hosts", im.read("/etc/hosts"), "127.0.1.1\tbb-guest\n")
	contains(t, "/etc/resolv.conf", im.read("/etc/resolv.conf"), "nameserver 10.11.12.1\n")
}
