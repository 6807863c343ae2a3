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
	"path/filepath"

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
	warn := func(s string) { fmt.Fprintln(os.Stderr, "lockgen: warning: "+s) }
	l, err := bundle.GenerateLock(dir, m, bundle.LockOptions{Only: only, Warn: warn})
	if err != nil {
		return err
	}
	if err := bundle.CopyManifest(mpath, dir); err != nil {
		return err
	}
	n := 0
	for _, c := range l.Components {
		n += len(c.Files)
	}
	fmt.Fprintf(os.Stderr, "lockgen: %s: %d files in %d components\n", filepath.Join(dir, bundle.LockName), n, len(l.Components))
	return nil
}
