// Command seed writes benchmark fixtures straight into a banger database:
// image rows for existing ext4 files, and many stopped VM rows. It exists so
// bench/ can measure `vm ls` over 1,000 VMs without booting 1,000 VMs.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log"
	"os"

	"github.com/bangerhq/banger/internal/store"
)

func main() {
	db := flag.String("db", "", "path of banger.db")
	image := flag.String("image", "", "image name")
	path := flag.String("path", "", "with -image: register this ext4 file as the image")
	vms := flag.Int("vms", 0, "insert this many stopped VMs using -image")
	flag.Parse()
	if *db == "" || *image == "" {
		log.Fatal("usage: seed -db PATH -image NAME (-path FILE | -vms N)")
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
	if *vms > 0 {
		im, err := store.GetImage(ctx, s.DB, *image)
		if err != nil {
			log.Fatal(err)
		}
		err = s.Tx(ctx, func(tx *sql.Tx) error {
			for i := 0; i < *vms; i++ {
				vm := store.VM{
					ID: fmt.Sprintf("bench%07d", i), Name: fmt.Sprintf("bench-%d", i), ImageID: im.ID,
					CPUs: 1, MemoryMiB: 256, DiskBytes: 4 << 30, Kernel: "/nonexistent/vmlinux",
					KernelArgs: "console=ttyS0", MAC: fmt.Sprintf("52:54:01:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff),
					VMM: "qemu", DesiredState: store.DesiredStopped,
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
		if err != nil {
			log.Fatal(err)
		}
	}
}
