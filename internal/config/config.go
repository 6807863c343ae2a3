// Package config loads the user's $XDG_CONFIG_HOME/banger/config.toml.
// Every key is optional; a missing file means defaults. Unknown keys are an
// error, so a typo does not silently do nothing.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	toml "github.com/pelletier/go-toml/v2"
)

// Config mirrors config.toml.
type Config struct {
	VMM     VMM     `toml:"vmm"`
	Network Network `toml:"network"`
	VM      VM      `toml:"vm"`
	Runtime Runtime `toml:"runtime"`
	SSH     SSH     `toml:"ssh"`
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

// Network configures the bridge VMs attach to.
type Network struct {
	Bridge string `toml:"bridge"` // default "banger0"
	Subnet string `toml:"subnet"` // e.g. "172.30.0.0/24"; default: first free candidate
	DNS    string `toml:"dns"`    // nameserver given to guests; default: none
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
	switch c.VMM.Accel {
	case "", "kvm", "tcg":
	default:
		return c, fmt.Errorf("config %s: vmm.accel = %q: use \"kvm\", \"tcg\" or leave it unset for auto", path, c.VMM.Accel)
	}
	return c, nil
}
