package tui

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/client"
	"github.com/bangerhq/banger/internal/progress"
	"github.com/bangerhq/banger/internal/vm"
)

// stateDir is the daemon state folder the test backend's VMs live in (the
// path the goldens were first recorded with, against a real daemon).
const stateDir = "/tmp/btui-TESTROOT/s/banger"

// testBackend is a test double of bangerd for the TUI, named as such: it
// keeps VMs and images in memory and answers every Backend call the way the
// daemon does, with its rules where they decide a screen (VM names are
// checked by vm.ValidateName, a stopped VM has no SSH, a running one is not
// deleted without force) and its errors (*api.RemoteError with the
// daemon's codes and words). While down it fails as the real client does
// when no daemon listens. The real daemon behind the TUI is tested end to
// end in e2e (tuiWithRunningVM).
type testBackend struct {
	mu     sync.Mutex
	vms    map[string]api.VM
	images []api.Image
	down   bool
	// startErr is what starting a VM fails with, by name ("" boots it).
	startErr map[string]string
	// gate, when set, holds every VM operation until it is closed.
	gate chan struct{}
}

var _ Backend = (*testBackend)(nil)

// remote is err as the client returns a daemon's error.
func remote(err error) error {
	return &api.RemoteError{Code: api.CodeFor(err), Message: err.Error()}
}

// unreachable is the real client's error when no daemon listens.
func unreachable() error {
	_, err := client.New(stateDir[:len(stateDir)-len("/s/banger")] + "/r/banger/bangerd.sock").Status(context.Background())
	return err
}

// seedBasic is two images and four stopped VMs, one with a recorded error.
func seedBasic() *testBackend {
	fixed := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	b := &testBackend{vms: map[string]api.VM{}, startErr: map[string]string{}}
	imgPath := "/tmp/btui-TESTROOT/d/rootfs.ext4"
	b.images = []api.Image{
		{ID: "img-alpine", Name: "alpine", Source: "oci:alpine:3.20", Path: imgPath, SizeBytes: 512 << 20, KernelRelease: "6.1.0", CreatedAt: fixed},
		{ID: "img-default", Name: "default", Source: "debian:bookworm", Path: imgPath, SizeBytes: 2 << 30, KernelRelease: "6.1.0", CreatedAt: fixed},
	}
	for i, v := range []api.VM{
		{ID: "vm0000001", Name: "alpha", Image: "default", CPUs: 2, MemoryMiB: 1024, DiskBytes: 4 << 30, VsockCID: 3},
		{ID: "vm0000002", Name: "bravo", Image: "alpine", CPUs: 1, MemoryMiB: 256, DiskBytes: 2 << 30},
		{ID: "vm0000003", Name: "charlie", Image: "default", CPUs: 4, MemoryMiB: 2048, DiskBytes: 8 << 30,
			LastError: "start vm \"charlie\": kernel /nonexistent/vmlinux: no such file"},
		{ID: "vm0000004", Name: "a-very-long-vm-name-that-is-cut", Image: "default", CPUs: 1, MemoryMiB: 512, DiskBytes: 4 << 30},
	} {
		b.add(v, fmt.Sprintf("10.99.0.%d", i+2), fixed)
	}
	return b
}

// seedMany is one image and n stopped VMs.
func seedMany(n int) *testBackend {
	b := &testBackend{vms: map[string]api.VM{}, startErr: map[string]string{}}
	b.images = []api.Image{{ID: "img-default", Name: "default", Source: "bench", Path: "/none.ext4", SizeBytes: 1 << 30}}
	for i := 0; i < n; i++ {
		b.add(api.VM{ID: fmt.Sprintf("many%05d", i), Name: fmt.Sprintf("vm-%02d", i), Image: "default",
			CPUs: 1, MemoryMiB: 256, DiskBytes: 4 << 30}, fmt.Sprintf("10.98.%d.%d", i>>8, i&0xff+2), time.Time{})
	}
	return b
}

// add records a stopped VM as the daemon shows one.
func (b *testBackend) add(v api.VM, ip string, created time.Time) {
	v.State, v.DesiredState, v.VMM, v.IP = api.StateStopped, api.StateStopped, "qemu", ip
	v.MAC = "52:54:00:00:00:" + v.ID[len(v.ID)-2:]
	v.Kernel, v.KernelArgs = "/nonexistent/vmlinux", "console=ttyS0"
	v.Dir = stateDir + "/vms/" + v.ID
	v.ConsoleLog = v.Dir + "/console.log"
	v.CreatedAt, v.UpdatedAt = created, created
	b.vms[v.Name] = v
}

func (b *testBackend) setDown(down bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down = down
}

// enter waits for the gate and reports whether the daemon is reachable.
func (b *testBackend) enter() error {
	b.mu.Lock()
	gate := b.gate
	b.mu.Unlock()
	if gate != nil {
		<-gate
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down {
		return unreachable()
	}
	return nil
}

func (b *testBackend) ListVMs(ctx context.Context) ([]api.VM, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down {
		return nil, unreachable()
	}
	out := make([]api.VM, 0, len(b.vms))
	for _, v := range b.vms {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (b *testBackend) ListImages(ctx context.Context) ([]api.Image, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down {
		return nil, unreachable()
	}
	out := make([]api.Image, len(b.images))
	for i, im := range b.images {
		im.UsedBy = nil
		for _, v := range b.vms {
			if v.Image == im.Name {
				im.UsedBy = append(im.UsedBy, v.Name)
			}
		}
		sort.Strings(im.UsedBy)
		out[i] = im
	}
	return out, nil
}

// withVM runs fn on the VM named name, as one daemon call: it waits for
// the gate, fails while down, and answers the daemon's not-found error for
// a VM that does not exist. fn runs with b.mu held.
func (b *testBackend) withVM(name string, fn func(v api.VM) error) error {
	if err := b.enter(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.vms[name]
	if !ok {
		return remote(api.Errorf(api.ErrNotFound, "no VM named %q: see `banger vm ls`", name))
	}
	return fn(v)
}

func (b *testBackend) CreateVM(ctx context.Context, p api.VMCreateParams) (api.VM, error) {
	if !p.NoStart {
		reportBoot(ctx, true)
	}
	if err := b.enter(); err != nil {
		return api.VM{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.Name == "" {
		p.Name = "calm-otter"
	}
	if err := vm.ValidateName(p.Name); err != nil {
		return api.VM{}, remote(err)
	}
	if _, ok := b.vms[p.Name]; ok {
		return api.VM{}, remote(api.Errorf(api.ErrExists, "a VM named %q already exists: pick another name or remove it with `banger vm rm %s`", p.Name, p.Name))
	}
	b.add(api.VM{ID: fmt.Sprintf("vm%07d", len(b.vms)+10), Name: p.Name, Image: p.Image, CPUs: p.CPUs, MemoryMiB: p.MemoryMiB, DiskBytes: p.DiskBytes},
		fmt.Sprintf("10.99.0.%d", len(b.vms)+10), time.Time{})
	v := b.vms[p.Name]
	if !p.NoStart {
		v = b.boot(v)
	}
	return v, nil
}

// boot marks v running, as a daemon does once the guest answers. The
// caller holds b.mu.
func (b *testBackend) boot(v api.VM) api.VM {
	now := time.Date(2025, 1, 2, 3, 59, 0, 0, time.UTC)
	v.State, v.DesiredState, v.PID, v.TAP, v.LastError = api.StateRunning, api.StateRunning, 4242, "tap-"+v.ID, ""
	v.StartedAt = &now
	b.vms[v.Name] = v
	return v
}

// reportBoot reports the phases a daemon reports while it boots a VM (the
// disk first when it creates one), before the gate holds the call.
func reportBoot(ctx context.Context, create bool) {
	if create {
		progress.Report(ctx, api.Progress{Phase: vm.PhaseDisk, Message: "copying image default into a 4 GiB disk"})
	}
	progress.Report(ctx, api.Progress{Phase: vm.PhaseVMM, Message: "starting qemu"})
	progress.Report(ctx, api.Progress{Phase: vm.PhaseBoot, Message: "kernel booting (qemu pid 4242, tcg)"})
}

func (b *testBackend) StartVM(ctx context.Context, name string) (out api.VM, err error) {
	reportBoot(ctx, false)
	err = b.withVM(name, func(v api.VM) error {
		if msg := b.startErr[name]; msg != "" {
			v.LastError = msg
			b.vms[name] = v
			return remote(fmt.Errorf("start vm %q: %s", name, msg))
		}
		out = b.boot(v)
		return nil
	})
	return out, err
}

func (b *testBackend) StopVM(ctx context.Context, name string, force bool) (out api.VM, err error) {
	err = b.withVM(name, func(v api.VM) error {
		v.State, v.DesiredState, v.PID, v.TAP, v.StartedAt = api.StateStopped, api.StateStopped, 0, "", nil
		b.vms[name], out = v, v
		return nil
	})
	return out, err
}

func (b *testBackend) RestartVM(ctx context.Context, name string) (api.VM, error) {
	if _, err := b.StopVM(ctx, name, false); err != nil {
		return api.VM{}, err
	}
	return b.StartVM(ctx, name)
}

// PauseVM and ResumeVM refuse a VM that is not running (or paused), as
// the daemon does.
func (b *testBackend) PauseVM(ctx context.Context, name string) (api.VM, error) {
	return b.setPaused(name, api.StateRunning, api.StatePaused)
}

func (b *testBackend) ResumeVM(ctx context.Context, name string) (api.VM, error) {
	return b.setPaused(name, api.StatePaused, api.StateRunning)
}

func (b *testBackend) setPaused(name, from, to string) (out api.VM, err error) {
	err = b.withVM(name, func(v api.VM) error {
		if v.State != from && v.State != to {
			return remote(api.Errorf(api.ErrPrecondition, "VM %q is %s, not running: start it with `banger vm start %s`", name, v.State, name))
		}
		v.State = to
		b.vms[name], out = v, v
		return nil
	})
	return out, err
}

func (b *testBackend) DeleteVM(ctx context.Context, name string, force bool) error {
	return b.withVM(name, func(v api.VM) error {
		if v.State == api.StateRunning && !force {
			return remote(api.Errorf(api.ErrPrecondition, "VM %q is running: stop it first (`banger vm stop %s`) or use `banger vm rm --force %s`", name, name, name))
		}
		delete(b.vms, name)
		return nil
	})
}

func (b *testBackend) SSHInfo(ctx context.Context, name string) (info api.SSHInfo, err error) {
	err = b.withVM(name, func(v api.VM) error {
		if v.State != api.StateRunning {
			return remote(api.Errorf(api.ErrPrecondition, "VM %q is %s: start it with `banger vm start %s`", name, v.State, name))
		}
		info = api.SSHInfo{User: "root", Host: v.IP, Port: 22, IdentityFile: stateDir + "/ssh/id_ed25519",
			KnownHostsFile: v.Dir + "/known_hosts", HostKeyAlias: v.IP}
		return nil
	})
	return info, err
}

func (b *testBackend) PingVM(ctx context.Context, name string, timeout time.Duration) (r api.PingResult, err error) {
	err = b.withVM(name, func(v api.VM) error {
		r = api.PingResult{Name: name, State: v.State, StartedAt: v.StartedAt}
		if v.State != api.StateRunning {
			r.Error = "vm is " + v.State
			return nil
		}
		r.Alive, r.RTTMillis, r.Hostname, r.Channel = true, 1, name, "virtio-serial"
		return nil
	})
	return r, err
}
