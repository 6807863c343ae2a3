// Package network gives banger's VMs their network: a Linux bridge holding the
// gateway address, one persistent TAP device per VM enslaved to it, IPv4 and
// MAC allocation, and the guest network policy (masquerading NAT, what guests
// may reach, and a per-port guard against spoofed MAC and IP addresses) in
// nftables tables of banger's own (see [Policy], [Host.EnsurePolicy] and
// [Host.GuardPort]).
//
// The package has two halves. The pure half (subnets, addresses, MACs, TAP
// names) works anywhere and has no side effects. The host half (files ending
// in _linux.go) changes the kernel's network state and needs CAP_NET_ADMIN.
//
// The host half is built around [Host], which is bound to one network
// namespace: [New] binds to the namespace the process runs in, [NewAt] to any
// namespace given by a handle, which is how the tests confine every change to
// a namespace they create. The package-level functions ([EnsureBridge],
// [CreateTAP], ...) are shorthands for New, the method, Close.
//
// How the daemon is expected to pick its subnet: use the configured
// network.subnet if set; else, if the bridge already exists, reuse its subnet
// ([BridgeSubnet]); else [ChooseSubnet]([HostPrefixes](), [DefaultCandidates]()).
// The order matters: HostPrefixes includes banger's own bridge, so once the
// bridge exists ChooseSubnet would move away from it.
package network

import (
	"errors"
	"fmt"
	"syscall"
)

// ErrNeedCapNetAdmin is wrapped by every error that failed because the
// process lacks CAP_NET_ADMIN (EPERM/EACCES from the kernel). Its text tells
// the user how to grant the capability.
var ErrNeedCapNetAdmin = errors.New("creating network devices needs CAP_NET_ADMIN: " +
	"run bangerd as root or `sudo setcap cap_net_admin+ep $(which bangerd)`")

// ErrExhausted is returned by AllocateIP when every host address of the
// subnet is taken.
var ErrExhausted = errors.New("no free address left in subnet")

// ErrNoFreeSubnet is returned by ChooseSubnet when every candidate overlaps
// a prefix already in use on the host.
var ErrNoFreeSubnet = errors.New("no free subnet for the banger bridge")

// ErrNotBridge is returned when a link that banger expects to be its bridge
// exists but is some other kind of device.
var ErrNotBridge = errors.New("link exists and is not a bridge")

// privileged adds the CAP_NET_ADMIN hint to err when the kernel refused the
// operation for lack of privilege; other errors are returned unchanged.
func privileged(err error) error {
	if err == nil || errors.Is(err, ErrNeedCapNetAdmin) {
		return err
	}
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w: %w", err, ErrNeedCapNetAdmin)
	}
	return err
}
