package network

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// tapBusyWait bounds OpenTAP's retries of a TAP device another descriptor
// is attached to.
const tapBusyWait = 2 * time.Second

// OpenTAP attaches to the existing TAP device name (see CreateTAP) and
// returns its queue descriptor, for a VMM that is handed its network device
// instead of opening it (QEMU `-netdev tap,fd=N`), so that the VMM needs
// neither /dev/net/tun nor CAP_NET_ADMIN nor to own the device. The caller
// must own the device or have CAP_NET_ADMIN. A missing device is an error
// (attaching to a missing name would make a new, unbridged one). The device
// is persistent: closing the descriptor leaves it in place.
func (h *Host) OpenTAP(name string) (*os.File, error) {
	if err := checkLinkName(name); err != nil {
		return nil, fmt.Errorf("open tap: %w", err)
	}
	l, err := h.linkByName(name)
	if err != nil {
		return nil, fmt.Errorf("open tap %q: %w", name, err)
	}
	if l == nil || l.Type() != "tuntap" {
		return nil, fmt.Errorf("open tap %q: no such TAP device", name)
	}
	var f *os.File
	err = h.inNS(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			return fmt.Errorf("open /dev/net/tun: %w: the kernel has no TUN/TAP support loaded; run `sudo modprobe tun`", err)
		}
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", privileged(err))
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(tapFlags)
		// EBUSY: another descriptor is attached. CreateTAP's own is closed
		// by now, but a process another goroutine forked meanwhile holds a
		// copy of it until its exec (close-on-exec), a moment later: two
		// VMs started at once do this. So EBUSY is retried for a while.
		for deadline := time.Now().Add(tapBusyWait); ; {
			err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
			if err == nil {
				break
			}
			if errors.Is(err, unix.EBUSY) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF: %w", privileged(err))
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open tap %q: %w", name, err)
	}
	return f, nil
}

// OpenTAP is New().OpenTAP(name) for the process's own namespace.
func OpenTAP(name string) (f *os.File, err error) {
	err = withHost(func(h *Host) error { f, err = h.OpenTAP(name); return err })
	return f, err
}
