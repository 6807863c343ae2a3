package qemu

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bangerhq/banger/internal/mounts"
	"github.com/bangerhq/banger/internal/vmm"
)

// Shared folders (vmm.Spec.Shares): each is a vhost-user-fs device served
// by a virtiofsd of its own (see package mounts: it runs as the folder's
// owner in a user namespace of its own). QEMU opens nothing by path, so
// Start binds each share's socket, starts virtiofsd on the listening
// descriptor, connects to it itself and hands QEMU the connected
// descriptor; the socket file is removed once QEMU runs. virtiofsd exits
// when that connection closes, that is when QEMU exits however it ends:
// it lives exactly as long as the VM, and a daemon restart leaves both.

// VirtiofsdOutName receives the output of a VM's virtiofsd processes,
// <Dir>/virtiofsd.out.
const VirtiofsdOutName = "virtiofsd.out"

var _ vmm.FolderSharer = (*Driver)(nil)

// SharesFolders reports true: QEMU has virtio-fs (vhost-user-fs-device).
func (d *Driver) SharesFolders() bool { return true }

// ShareSocket returns the path of share i's vhost-user socket in a VM
// folder; it exists only while Start connects QEMU to virtiofsd.
func ShareSocket(dir string, i int) string {
	return filepath.Join(dir, "fs"+strconv.Itoa(i)+".sock")
}

// shareArgs is the part of the command line for spec.Shares: the guest's
// memory in a shared memfd (virtiofsd maps it; a memfd is no file QEMU
// would open by path), modern virtio-mmio (virtiofsd refuses legacy
// devices, and then every device of the VM is modern, which the guest
// kernel handles alike), and a vhost-user-fs device per share on the
// connected descriptor Start passes.
func shareArgs(p *fdPlan, spec vmm.Spec) []string {
	if len(spec.Shares) == 0 {
		return nil
	}
	a := []string{
		"-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", spec.MemoryMiB),
		"-M", "memory-backend=mem",
		"-global", "virtio-mmio.force-legacy=false",
	}
	for i, sh := range spec.Shares {
		a = append(a,
			"-chardev", fmt.Sprintf("socket,id=fs%d,fd=%d", i, p.pass(HowConnect, ShareSocket(spec.Dir, i))),
			"-device", fmt.Sprintf("vhost-user-fs-device,chardev=fs%d,tag=%s", i, sh.Tag))
	}
	return a
}

// virtiofsds are the virtiofsd processes of one Start, with the sockets
// they listen on.
type virtiofsds struct {
	procs   []*os.Process
	sockets []string
}

// startVirtiofsds starts a virtiofsd for each of spec's shares, listening
// on its ShareSocket, its output appended to <Dir>/virtiofsd.out. On error
// it kills those it started and removes their sockets.
func (d *Driver) startVirtiofsds(spec vmm.Spec) (*virtiofsds, error) {
	v := &virtiofsds{}
	if len(spec.Shares) == 0 {
		return v, nil
	}
	if err := mounts.CheckVirtiofsd(); err != nil {
		return nil, err
	}
	out, err := os.OpenFile(filepath.Join(spec.Dir, VirtiofsdOutName), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("virtiofsd output: %w", err)
	}
	defer out.Close()
	for i, sh := range spec.Shares {
		sock := ShareSocket(spec.Dir, i)
		ln, err := listen(sock)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("shared folder %s: %w", sh.HostDir, err), v.kill())
		}
		v.sockets = append(v.sockets, sock)
		p, err := mounts.StartVirtiofsd(mounts.VirtiofsdBinary,
			mounts.Spec{HostDir: sh.HostDir, ReadOnly: sh.ReadOnly}, mounts.Owner{UID: sh.UID, GID: sh.GID}, ln, out)
		ln.Close() // virtiofsd holds its own copy
		if err != nil {
			return nil, errors.Join(err, v.kill())
		}
		v.procs = append(v.procs, p)
		d.log.Info("virtiofsd started", "vm", spec.ID, "pid", p.Pid, "folder", sh.HostDir, "read_only", sh.ReadOnly, "uid", sh.UID)
	}
	return v, nil
}

// kill ends the virtiofsd processes (a QEMU that never connected, or
// failed to start) and removes the sockets.
func (v *virtiofsds) kill() error {
	for _, p := range v.procs {
		p.Kill()
	}
	return v.removeSockets()
}

// removeSockets removes the sockets, once QEMU is connected (or gone).
func (v *virtiofsds) removeSockets() error {
	err := vmm.RemoveFiles(v.sockets...)
	v.sockets = nil
	return err
}

// dialUnix connects to the Unix socket at p and returns the connected
// descriptor. The listener accepts later: the kernel completes the
// connection into its backlog at once.
func dialUnix(p string) (*os.File, error) {
	c, err := net.DialTimeout("unix", p, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*net.UnixConn).File()
}

// notes say which virtiofsd serves which share, for State.Notes.
func (v *virtiofsds) notes() []string {
	var out []string
	for i, p := range v.procs {
		out = append(out, fmt.Sprintf("share %d: virtiofsd pid %d (exits with qemu)", i, p.Pid))
	}
	return out
}
