// Command jailer-simulator is a simulator of Firecracker's jailer for
// tests (package jailersim): it jails the Firecracker simulator as the
// jailer jails Firecracker. It is NOT the jailer.
package main

import (
	"os"

	"github.com/bangerhq/banger/internal/vmm/firecracker/jailersim"
)

func main() { os.Exit(jailersim.Main()) }
