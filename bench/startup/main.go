// Command startup times how fast the banger CLI starts: `banger --help`,
// `banger version` and `banger vm ls` against a minimal static Go binary
// (it prints one line and exits), side by side in one run. The commands run
// interleaved (one of each per round, the first rotating), so drifting host
// load hits every side alike. It prints each side's median wall time (what
// a user waits) and median CPU time (user + system: the work the process
// does, which other load on the host disturbs less), each with its ratio
// to the minimal binary's.
//
// `vm ls` needs a daemon: the first round's warm-up starts one when none
// runs (set the XDG variables for a private banger, as bench/run.sh does).
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// minimalSource is the side the others are measured against: the least a Go
// program does to print a line.
const minimalSource = `package main

import "os"

func main() { os.Stdout.WriteString("minimal\n") }
`

func main() {
	banger := flag.String("banger", "bin/banger", "the banger binary to time")
	runs := flag.Int("runs", 200, "runs of each command")
	goal := flag.Float64("goal", 2, "say so when `banger --help` takes more than this many times the minimal binary's wall or CPU time")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("startup: ")

	minimal, cleanup, err := buildMinimal()
	if err != nil {
		log.Fatal(err)
	}
	defer cleanup()
	sides := []side{
		{name: "minimal static Go binary", argv: []string{minimal}},
		{name: "banger --help", argv: []string{*banger, "--help"}},
		{name: "banger version", argv: []string{*banger, "version"}},
		{name: "banger vm ls", argv: []string{*banger, "vm", "ls"}},
	}
	for i := range sides { // warm-up: page cache, and a daemon for vm ls
		if _, out, err := sides[i].run(); err != nil {
			log.Fatalf("%s: %v\n%s", sides[i].name, err, out)
		}
	}
	for r := 0; r < *runs; r++ {
		for k := range sides {
			s := &sides[(r+k)%len(sides)]
			start := time.Now()
			cpu, out, err := s.run()
			if err != nil {
				log.Fatalf("%s: %v\n%s", s.name, err, out)
			}
			s.wall = append(s.wall, time.Since(start))
			s.cpu = append(s.cpu, cpu)
		}
	}
	baseWall, baseCPU := median(sides[0].wall), median(sides[0].cpu)
	fmt.Printf("== startup: %d runs each, interleaved (medians; ratio to the minimal binary)\n", *runs)
	fmt.Printf("%-26s %10s %7s %10s %7s\n", "", "wall", "", "cpu", "")
	for _, s := range sides {
		w, c := median(s.wall), median(s.cpu)
		fmt.Printf("%-26s %7.2f ms %6.2fx %7.2f ms %6.2fx\n", s.name, ms(w), float64(w)/float64(baseWall), ms(c), float64(c)/float64(baseCPU))
	}
	wall := float64(median(sides[1].wall)) / float64(baseWall)
	cpu := float64(median(sides[1].cpu)) / float64(baseCPU)
	verdict := "within"
	if wall > *goal || cpu > *goal {
		verdict = "ABOVE"
	}
	fmt.Printf("banger --help: %.2fx wall, %.2fx cpu: %s the goal of %.1fx\n", wall, cpu, verdict, *goal)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// side is one command being timed.
type side struct {
	name      string
	argv      []string
	wall, cpu []time.Duration
}

// run runs the command once, its output discarded unless it fails, and
// returns the CPU time it used.
func (s *side) run() (cpu time.Duration, stderr []byte, err error) {
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	var out strings.Builder
	cmd.Stderr = &out
	err = cmd.Run()
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	return cpu, []byte(out.String()), err
}

// buildMinimal builds minimalSource as a static binary (no cgo, stripped,
// as banger is built) in a temporary folder.
func buildMinimal() (bin string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "banger-startup-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	for name, text := range map[string]string{"main.go": minimalSource, "go.mod": "module minimal\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			cleanup()
			return "", nil, err
		}
	}
	bin = filepath.Join(dir, "minimal")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("build the minimal binary: %v\n%s", err, out)
	}
	return bin, cleanup, nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
