package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/vmm/proc"
)

// TestTemplates: image warm makes a template; two clones created at once
// are machines of their own (address, MAC, hostname, machine-id, pinned
// SSH host key, RNG, clock) that reach each other (c1 gets c2's SSH banner) and do not share files;
// their disks are qcow2 overlays of the template's disk, and QEMU has no
// image locking complaint; the template's files are unchanged; vm restart
// of a clone boots it cold with its disk kept; a daemon SIGKILLed during a
// clone leaves nothing half-made; a template made for another QEMU build
// is not loaded, and image warm makes a new one; image rm --force while
// clones exist keeps the template's disk, unchanged, for them (a stopped
// clone starts from it, a running one reads on) until the last is gone.
func TestTemplates(t *testing.T) {
	requireHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	e := newEnv(t)
	e.debianImage(ctx)
	e.must(ctx, "daemon", "stop")
	e.extraEnv = append(e.extraEnv, "BANGER_DEBUG=1") // the clones' steps in the guest
	e.enterNetns()
	logStep := stepLogger(t)

	e.must(ctx, "image", "warm", "default", "--cpus", "1", "--memory", "512", "--disk", "1G")
	logStep("image warm")
	im := e.imageShow(ctx, "default")
	if len(im.Templates) != 1 {
		t.Fatalf("image show lists %d templates after image warm, want 1: %+v", len(im.Templates), im.Templates)
	}
	tpl := im.Templates[0]
	t.Logf("template %s: %d bytes on disk, built in %.1f s", tpl.Key, tpl.SizeBytes, tpl.BuildSeconds)
	if !strings.Contains(e.must(ctx, "image", "show", "default"), tpl.Key[:12]) {
		t.Errorf("image show does not list template %s", tpl.Key[:12])
	}
	sums := hashFiles(t, tpl.Dir, "ram", "state", "disk.ext4")
	logStep("hash the template's files")

	// Two clones at once.
	vms := createClones(ctx, t, e, tpl.Key, []string{"c1", "c2"}, "--cpus", "1", "--memory", "512", "--disk", "1G")
	logStep("two vm creates at once from the template")
	for _, v := range vms {
		if _, err := os.Stat(filepath.Join(v.Dir, "disk.qcow2")); err != nil {
			t.Errorf("clone %s: no overlay disk: %v", v.Name, err)
		}
		if _, err := os.Stat(filepath.Join(v.Dir, "disk.ext4")); err == nil {
			t.Errorf("clone %s has a copy of the template's disk besides its overlay", v.Name)
		}
	}
	if log := e.daemonLog(); strings.Contains(log, "Failed to get shared") {
		t.Errorf("QEMU complained about image locking during the clones' start:\n%s", log)
	}
	// A clone is idle once created: the template was saved after udev
	// had handled the boot's devices, so no clone handles them again
	// (when it did, each clone's vCPU was busy for seconds after vm
	// create returned, and beside its identity and first SSH session).
	for _, v := range vms {
		if used := vmmCPU(t, v.PID, 3*time.Second); used > time.Second {
			t.Errorf("clone %s: its VMM used %s of CPU in the 3 s after vm create, want an idle guest (under 1 s)", v.Name, used)
		} else {
			t.Logf("clone %s: its VMM used %s of CPU in the 3 s after vm create", v.Name, used)
		}
	}

	cloneChecks(ctx, t, e, vms)
	// The template's quiesce found the network device, and banger-net
	// started it at the template's boot: no clone looks for it or starts
	// it again (each cost a clone 30-45 ms under TCG).
	for _, v := range vms {
		var steps []string
		for _, l := range strings.Split(e.daemonLog(), "\n") {
			if strings.Contains(l, "vm="+v.Name+" ") && strings.Contains(l, "step in the guest") {
				steps = append(steps, l)
			}
		}
		joined := strings.Join(steps, "\n")
		if !strings.Contains(joined, `step="identity: network: mac"`) || strings.Contains(joined, `step="identity: network: up"`) {
			t.Errorf("clone %s: its identity started the network device again, or logged no steps:\n%s", v.Name, joined)
		}
	}
	// The template's agent was saved waiting for a session (its last
	// line before the save says the host ended the session): a clone's
	// first sync is answered, not taken for garbage by a session the
	// template's build left running (which cost every clone 500 ms).
	j := e.must(ctx, "vm", "exec", "c2", "--", "journalctl", "-u", "banger-vsock-pingd", "-o", "cat", "--no-pager")
	if _, after, ok := strings.Cut(j, "the host ended the session"); !ok || strings.Contains(after, "invalid protocol version") {
		t.Errorf("the template's agent was not saved waiting for a session, or the clone's agent took the host's sync for garbage:\n%s", j)
	}
	logStep("identity, clock, ping and file checks of both clones")

	// Restart: a cold boot with the disk kept.
	restartChecks(ctx, t, e, "c1")
	logStep("vm restart of a clone")

	// A daemon SIGKILLed during a clone leaves nothing half-made.
	killDuringCreate(ctx, t, e, "c3", "--cpus", "1", "--memory", "512", "--disk", "1G")
	logStep("SIGKILL of bangerd during a clone")

	// Another QEMU build: the template is not loaded; image warm makes one.
	qdir, err := os.MkdirTemp("", "bgr-qemu-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(qdir)
	os.Chmod(qdir, 0o755)
	orig, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	// Another build as far as banger can tell: a program of other content
	// (a wrapper; a copy of the binary would not find its modules).
	other := filepath.Join(qdir, "qemu-system-x86_64")
	if err := os.WriteFile(other, []byte("#!/bin/sh\nexec "+orig+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.must(ctx, "daemon", "stop")
	e.writeConfig(fmt.Sprintf("[network]\nbridge = %q\n[vmm]\nqemu = %q\n", e.bridge, other))
	var c4 api.VM
	if err := json.Unmarshal([]byte(e.must(ctx, "vm", "create", "c4", "--cpus", "1", "--memory", "512", "--disk", "1G", "--json")), &c4); err != nil {
		t.Fatal(err)
	}
	if c4.BootedFrom != "cold boot" {
		t.Errorf("vm create under another QEMU build: booted from %q, want a cold boot", c4.BootedFrom)
	}
	logStep("vm create under another QEMU build (cold)")
	var t2 api.Template
	if err := json.Unmarshal([]byte(e.must(ctx, "image", "warm", "default", "--cpus", "1", "--memory", "512", "--disk", "1G", "--json")), &t2); err != nil {
		t.Fatal(err)
	}
	if t2.Reused || t2.Key == tpl.Key {
		t.Errorf("image warm under another QEMU build: %+v, want a new template", t2)
	}
	logStep("image warm under another QEMU build")
	if now := hashFiles(t, tpl.Dir, "ram", "state", "disk.ext4"); !slices.Equal(now, sums) {
		t.Errorf("the template's files changed: %v, were %v", now, sums)
	}
	e.must(ctx, "vm", "rm", "--force", "c4")

	// image rm while clones exist: the template's disk stays for them.
	e.must(ctx, "vm", "stop", "c2")
	e.must(ctx, "image", "rm", "--force", "default")
	if _, err := os.Stat(filepath.Join(tpl.Dir, "template.json")); !os.IsNotExist(err) {
		t.Errorf("image rm left the template usable: %v", err)
	}
	if _, err := os.Stat(t2.Dir); !os.IsNotExist(err) {
		t.Errorf("image rm left the template no clone uses, %s: %v", t2.Dir, err)
	}
	if out := e.must(ctx, "vm", "ssh", "--no-remind", "c1", "--", "sh", "-c", "cat /root/c1-file && echo 3 > /proc/sys/vm/drop_caches && md5sum /usr/bin/ls >/dev/null && echo read"); out != "mine\nread\n" {
		t.Errorf("a running clone after image rm: %q", out)
	}
	e.must(ctx, "vm", "start", "c2")
	if out := e.must(ctx, "vm", "ssh", "--no-remind", "c2", "--", "cat", "/etc/hostname"); out != "c2\n" {
		t.Errorf("a stopped clone started after image rm: %q", out)
	}
	logStep("image rm with clones; a stopped clone starts (cold) from the kept disk")
	if now := hashFiles(t, tpl.Dir, "disk.ext4"); now[0] != sums[2] {
		t.Errorf("the template's disk changed under its clones: %v, was %v", now, sums[2])
	}
	e.must(ctx, "vm", "rm", "--force", "c1")
	if _, err := os.Stat(filepath.Join(tpl.Dir, "disk.ext4")); err != nil {
		t.Errorf("the template's disk went while c2 uses it: %v", err)
	}
	e.must(ctx, "vm", "rm", "--force", "c2")
	if _, err := os.Stat(tpl.Dir); !os.IsNotExist(err) {
		t.Errorf("the template %s outlived its last clone: %v", tpl.Dir, err)
	}
	logStep("remove the clones")
}

// hashFiles returns the SHA-256 of each named file in dir.
func hashFiles(t *testing.T, dir string, names ...string) []string {
	t.Helper()
	var out []string
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, n+":"+hex.EncodeToString(h.Sum(nil)))
	}
	return out
}

// vmmCPU is the CPU time (user and system) process pid uses during d.
func vmmCPU(t *testing.T, pid int, d time.Duration) time.Duration {
	t.Helper()
	used := func() time.Duration {
		c, err := proc.CPUTime(pid)
		if err != nil {
			t.Fatalf("read the VMM's CPU time: %v", err)
		}
		return c
	}
	a := used()
	time.Sleep(d)
	return used() - a
}
