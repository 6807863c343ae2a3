// Command seed writes benchmark fixtures straight into a banger database:
// image rows for existing ext4 files, and many VM rows. It exists so bench/
// can measure `vm ls` over 1,000 VMs without booting 1,000 VMs.
//
// With -running N, the first N VMs are recorded as running under QEMU, each
// with a live stand-in process (`sleep`, started in its own session, pid
// and start time recorded as a driver records a VMM), so the daemon checks
// their liveness as it does for real VMs; and -dead M more VMs record a
// driver state whose process is gone (the daemon finds them stopped at
// start). The stand-ins' pids go to -pids FILE, for the caller to kill.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/store"
	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/proc"
)

func main() {
	db := flag.String("db", "", "path of banger.db")
	image := flag.String("image", "", "image name")
	path := flag.String("path", "", "with -image: register this ext4 file as the image")
	vms := flag.Int("vms", 0, "insert this many VMs using -image")
	running := flag.Int("running", 0, "of -vms, this many run (a live stand-in process each)")
	dead := flag.Int("dead", 0, "of -vms, this many more record a driver state whose process is gone")
	pidFile := flag.String("pids", "", "with -running: write the stand-ins' pids here, one a line")
	flag.Parse()
	if *db == "" || *image == "" || *running+*dead > *vms || (*running > 0 && *pidFile == "") {
		log.Fatal("usage: seed -db PATH -image NAME (-path FILE | -vms N [-running R -pids FILE] [-dead D])")
	}
	ctx := context.Background()
	s, err := store.Open(ctx, *db)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	if *path != "" {
		st, err := os.Stat(*path)
		if err != nil {
			log.Fatal(err)
		}
		im := store.Image{ID: "bench-" + *image, Name: *image, Source: "bench", Path: *path, SizeBytes: st.Size()}
		if err := store.InsertImage(ctx, s.DB, &im); err != nil {
			log.Fatal(err)
		}
	}
	if *vms == 0 {
		return
	}
	im, err := store.GetImage(ctx, s.DB, *image)
	if err != nil {
		log.Fatal(err)
	}
	// The VM folders live beside the database, as the daemon's do.
	vmsDir := filepath.Join(filepath.Dir(*db), "vms")
	var pids []string
	err = s.Tx(ctx, func(tx *sql.Tx) error {
		for i := 0; i < *vms; i++ {
			vm := store.VM{
				ID: fmt.Sprintf("bench%07d", i), Name: fmt.Sprintf("bench-%d", i), ImageID: im.ID,
				CPUs: 1, MemoryMiB: 256, DiskBytes: 4 << 30, Kernel: "/nonexistent/vmlinux",
				KernelArgs: "console=ttyS0", MAC: fmt.Sprintf("52:54:01:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff),
				VMM: "qemu", DesiredState: store.DesiredStopped,
			}
			if i < *running+*dead {
				st, err := standIn(filepath.Join(vmsDir, vm.ID), i < *running)
				if err != nil {
					return err
				}
				if i < *running {
					pids = append(pids, strconv.Itoa(st.PID))
				}
				b, _ := json.Marshal(st)
				vm.DriverState, vm.DesiredState, vm.StartedAt = string(b), store.DesiredRunning, time.Now().UTC()
			}
			if err := store.InsertVM(ctx, tx, &vm); err != nil {
				return err
			}
			if err := store.InsertLease(ctx, tx, fmt.Sprintf("10.%d.%d.%d", 100+i>>16&0xff, i>>8&0xff, i&0xff), vm.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if len(pids) > 0 {
		if werr := os.WriteFile(*pidFile, []byte(strings.Join(pids, "\n")+"\n"), 0o600); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		log.Fatal(err)
	}
}

// standIn returns the driver state of a VM under QEMU in folder dir: for a
// live one, of a new `sleep` process standing in for the VMM (its own
// session, so it outlives this program as a VMM outlives the daemon); for a
// dead one, of this program's own pid with a start time that is not its.
func standIn(dir string, live bool) (vmm.State, error) {
	st := vmm.State{Version: vmm.StateVersion, Driver: "qemu", Accel: "tcg",
		ControlSocket: filepath.Join(dir, "qmp.sock"), AgentSocket: filepath.Join(dir, "agent.sock"),
		ConsoleLog: filepath.Join(dir, "console.log"), TAP: "tap-" + filepath.Base(dir)}
	if err := paths.CheckSocketPath(st.ControlSocket); err != nil {
		return st, err
	}
	if !live {
		st.PID, st.StartTime = os.Getpid(), 1
		return st, nil
	}
	cmd := exec.Command("sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return st, fmt.Errorf("start a stand-in process: %w", err)
	}
	start, err := proc.StartTime(cmd.Process.Pid)
	if err != nil {
		return st, err
	}
	st.PID, st.StartTime = cmd.Process.Pid, start
	return st, cmd.Process.Release()
}
