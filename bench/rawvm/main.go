// Command rawvm starts the QEMU of a VM as bangerd would, without the
// daemon: for the raw side of bench/run.sh's boot bench. QEMU opens
// nothing by path (bangerd passes it descriptors: see package qemu), so its
// command line cannot be replayed from a shell; rawvm opens the same files
// and launches the same command line through the QEMU driver, prints the
// QEMU pid and exits, leaving QEMU running (kill it by that pid).
//
// Usage: rawvm SHOW.json, where SHOW.json is `banger vm show --json NAME`
// of a VM that is not running; its TAP must exist (ip tuntap add). QEMU
// runs as the caller (root in the bench), under the same sandbox.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/qemu"
)

func main() {
	log.SetFlags(0)
	if len(os.Args) != 2 {
		log.Fatal("usage: rawvm SHOW.json (banger vm show --json NAME)")
	}
	b, err := os.ReadFile(os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	var v api.VM
	if err := json.Unmarshal(b, &v); err != nil {
		log.Fatalf("%s: %v", os.Args[1], err)
	}
	accel := v.Accel
	if accel == "" {
		accel = "tcg"
	}
	spec := vmm.Spec{
		ID: v.ID, Name: v.Name, Dir: v.Dir, CPUs: v.CPUs, MemoryMiB: v.MemoryMiB,
		Kernel: v.Kernel, Initrd: filepath.Join(filepath.Dir(v.Kernel), "initrd.img"), KernelArgs: v.KernelArgs,
		Disk: filepath.Join(v.Dir, "disk.ext4"), TAP: v.TAP, MAC: v.MAC,
		ConsoleLog: v.ConsoleLog, Accel: accel, Agent: true,
	}
	st, err := qemu.New("", nil).Start(context.Background(), spec)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(st.PID)
}
