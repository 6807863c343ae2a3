package vmm

import (
	"fmt"
	"os"
	"syscall"
)

// DeviceGroups returns the supplementary groups a VMM running as id needs
// to open each of devices (for example /dev/kvm) read-write: none for a
// device that id owns or that everybody may use, the device's group when
// that group may. A device id cannot be given access to is an error naming
// the device, its mode and owner, and the fix.
func DeviceGroups(id Identity, devices ...string) ([]uint32, error) {
	var groups []uint32
	for _, dev := range devices {
		fi, err := os.Stat(dev)
		if err != nil {
			return nil, fmt.Errorf("the VMM needs %s: %w", dev, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil, fmt.Errorf("the VMM needs %s: no owner information", dev)
		}
		perm := fi.Mode().Perm()
		switch {
		case perm&0o006 == 0o006:
		case st.Uid == id.UID && perm&0o600 == 0o600:
		case perm&0o060 == 0o060:
			if st.Gid != id.GID {
				groups = append(groups, st.Gid)
			}
		default:
			e := &DeviceError{Device: dev, Who: id, Mode: perm, UID: st.Uid, GID: st.Gid,
				Fix: fmt.Sprintf("chmod 0660 %s, with a group the VMM may join", dev)}
			switch dev {
			case "/dev/kvm":
				e.Fix = "chgrp kvm /dev/kvm && chmod 0660 /dev/kvm (as Debian's udev rules do)"
			case "/dev/net/tun":
				e.Fix = "chmod 0666 /dev/net/tun (the distributions' default)"
			}
			return nil, e
		}
	}
	return groups, nil
}

// DeviceError is DeviceGroups' error: a device the VMM user cannot be
// given.
type DeviceError struct {
	Device   string
	Who      Identity
	Mode     os.FileMode
	UID, GID uint32 // the device's owner
	// Fix is the command that opens the device to the VMM user.
	Fix string
}

func (e *DeviceError) Error() string {
	return fmt.Sprintf("the VMM runs as %s, which cannot open %s (mode %04o, owner %d:%d): fix: %s",
		e.Who, e.Device, e.Mode, e.UID, e.GID, e.Fix)
}

// Credential is what proc.Launch needs to start a VMM as runAs (nil: as
// the daemon itself, nil credential) with the supplementary groups that
// let it open devices (see DeviceGroups). It also returns the identity the
// VMM will have, for State.RunAs.
func Credential(runAs *Identity, devices ...string) (*syscall.Credential, Identity, error) {
	if runAs == nil {
		return nil, Self(), nil
	}
	groups, err := DeviceGroups(*runAs, devices...)
	if err != nil {
		return nil, Identity{}, err
	}
	// An empty Groups still drops the daemon's own supplementary groups.
	return &syscall.Credential{Uid: runAs.UID, Gid: runAs.GID, Groups: groups}, *runAs, nil
}
