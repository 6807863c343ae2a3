// Package config loads the user's $XDG_CONFIG_HOME/banger/config.toml.
// Every key is optional; a missing file means defaults. Unknown keys are an
// error, so a typo does not silently do nothing.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/bangerhq/banger/internal/units"
)

// Config mirrors config.toml.
type Config struct {
	VMM     VMM     `toml:"vmm"`
	Network Network `toml:"network"`
	VM      VM      `toml:"vm"`
	Runtime Runtime `toml:"runtime"`
	SSH     SSH     `toml:"ssh"`
	Image   Image   `toml:"image"`
}

// Image configures image builds.
type Image struct {
	// MaxSize caps what a build may expand to (file contents, sparse
	// files at their full size), e.g. "32G"; default 32G. A build never
	// uses more than half the free space of its folder either.
	MaxSize string `toml:"max_size"`
	// MaxFiles caps the files and folders of a build; default 2000000.
	MaxFiles int64 `toml:"max_files"`
}

// SSH configures `banger vm ssh`.
type SSH struct {
	// Remind, when false, turns off the "VM is still running" reminder
	// printed after an SSH session ends (like --no-remind). Default true.
	Remind *bool `toml:"remind"`
}

// RemindAfterSSH reports whether the reminder is on.
func (c Config) RemindAfterSSH() bool { return c.SSH.Remind == nil || *c.SSH.Remind }

// VMM configures the virtual machine monitors.
type VMM struct {
	// Accel is "kvm", "tcg" or "" (auto: KVM when it can run guests).
	// The environment variable BANGER_ACCEL overrides it.
	Accel string `toml:"accel"`
	// Default is the VMM for new VMs: "qemu", "firecracker" or "" (auto).
	Default string `toml:"default"`
	// QEMU is the qemu-system-x86_64 binary; "" looks it up in $PATH.
	QEMU string `toml:"qemu"`
}

// Network configures the bridge VMs attach to and what guests may reach
// (see README.md, "Guest network policy").
type Network struct {
	Bridge string `toml:"bridge"` // default "banger0"
	Subnet string `toml:"subnet"` // e.g. "172.30.0.0/24"; default: first free candidate
	DNS    string `toml:"dns"`    // nameserver given to guests; default: none
	// HostPorts are the host ports guests may reach, each a port number
	// (TCP) or a string "PORT/tcp" or "PORT/udp". Load checks them; read
	// them with Network.GuestHostPorts.
	HostPorts []any `toml:"host_ports"`
	// IsolateVMs, when true, stops all traffic between VMs.
	IsolateVMs bool `toml:"isolate_vms"`
	// Private, when false, stops guests from reaching private addresses
	// (RFC 1918 and 100.64.0.0/10) beyond the VM subnet. Default true.
	Private *bool `toml:"private"`
}

// HostPort is one host port open to guests.
type HostPort struct {
	Port  uint16
	Proto string // "tcp" or "udp"
}

func (p HostPort) String() string { return fmt.Sprintf("%d/%s", p.Port, p.Proto) }

// AllowPrivate reports whether guests may reach private addresses beyond
// the VM subnet (network.private, default true).
func (n Network) AllowPrivate() bool { return n.Private == nil || *n.Private }

// GuestHostPorts returns network.host_ports, without duplicates, or an
// error naming the first entry that is not a port number (TCP) or a string
// "PORT", "PORT/tcp" or "PORT/udp" with PORT from 1 to 65535.
func (n Network) GuestHostPorts() ([]HostPort, error) {
	var out []HostPort
	for i, v := range n.HostPorts {
		p, ok := parseHostPort(v)
		if !ok {
			shown := fmt.Sprintf("%v", v)
			if s, isString := v.(string); isString {
				shown = strconv.Quote(s)
			}
			return nil, fmt.Errorf("network.host_ports[%d] = %s: want a port number such as 22 (TCP), "+
				`or a string "PORT/tcp" or "PORT/udp" such as "8080/udp", with PORT from 1 to 65535`, i, shown)
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

func parseHostPort(v any) (HostPort, bool) {
	p := HostPort{Proto: "tcp"}
	var num string
	switch v := v.(type) {
	case int64:
		num = strconv.FormatInt(v, 10)
	case string:
		num = v
		if n, proto, ok := strings.Cut(v, "/"); ok {
			num, p.Proto = n, proto
		}
	default:
		return p, false
	}
	port, err := strconv.ParseUint(num, 10, 16)
	if err != nil || port == 0 || (p.Proto != "tcp" && p.Proto != "udp") {
		return p, false
	}
	p.Port = uint16(port)
	return p, true
}

// VM holds defaults for new VMs.
type VM struct {
	CPUs      int    `toml:"cpus"`
	MemoryMiB int    `toml:"memory_mib"`
	Disk      string `toml:"disk"` // e.g. "4G"
	Image     string `toml:"image"`
}

// Runtime locates the runtime bundle.
type Runtime struct {
	Dir string `toml:"dir"`
}

// Load reads path. A missing file yields the zero Config.
func Load(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) {
			var keys []string
			for _, e := range sm.Errors {
				row, _ := e.Position()
				keys = append(keys, fmt.Sprintf("%s (line %d)", strings.Join(e.Key(), "."), row))
			}
			return c, fmt.Errorf("config %s: unknown key %s: see README.md for the keys banger reads", path, strings.Join(keys, ", "))
		}
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if _, err := c.Network.GuestHostPorts(); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if c.Image.MaxSize != "" {
		if _, err := units.ParseSize(c.Image.MaxSize); err != nil {
			return c, fmt.Errorf("config %s: image.max_size: %w", path, err)
		}
	}
	if c.Image.MaxFiles < 0 {
		return c, fmt.Errorf("config %s: image.max_files = %d: use a positive number", path, c.Image.MaxFiles)
	}
	switch c.VMM.Accel {
	case "", "kvm", "tcg":
	default:
		return c, fmt.Errorf("config %s: vmm.accel = %q: use \"kvm\", \"tcg\" or leave it unset for auto", path, c.VMM.Accel)
	}
	return c, nil
}
