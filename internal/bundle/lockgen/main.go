// Command lockgen writes a runtime bundle's bundle.lock.toml from
// runtime-bundle.toml; the Makefile runs it after building the kernel and
// the agent, so the lock exists without a built bin/banger. It is what
// `banger runtime lock` does.
//
//	go run ./internal/bundle/lockgen -dir runtime -manifest runtime-bundle.toml [COMPONENT...]
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/bangerhq/banger/internal/bundle"
)

func main() {
	dir := flag.String("dir", "runtime", "runtime bundle directory")
	manifest := flag.String("manifest", bundle.ManifestName, "runtime-bundle.toml")
	flag.Parse()
	if err := run(*dir, *manifest, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "lockgen: "+err.Error())
		os.Exit(1)
	}
}

func run(dir, mpath string, only []string) error {
	m, err := bundle.LoadManifest(mpath)
	if err != nil {
		return err
	}
	return bundle.LockDir(dir, m, mpath, only, os.Stderr, "lockgen")
}
