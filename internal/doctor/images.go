package doctor

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"

	"github.com/bangerhq/banger/internal/store"
)

// AgentImagePath is where an image carries the guest agent.
const AgentImagePath = "/usr/local/bin/banger-vsock-pingd"

// imageCheckParallelism bounds concurrent debugfs runs: each reads an image.
const imageCheckParallelism = 4

func checkImageAgent(ctx context.Context, env *Env) Result {
	db := env.Dirs.Database()
	if _, err := os.Stat(db); errors.Is(err, fs.ErrNotExist) {
		return Result{Status: StatusSkip, Detail: "no database at " + db + " yet, so no images to check"}
	}
	debugfs, ok := env.lookTool("debugfs")
	if !ok {
		return Result{Status: StatusSkip, Detail: "debugfs (package e2fsprogs) not found: cannot look inside images",
			Fix: "sudo apt-get install e2fsprogs"}
	}
	images, err := listImages(ctx, db)
	if err != nil {
		return Result{Status: StatusWarn, Detail: err.Error(),
			Fix: "check " + db + " (`banger image ls` reads it through the daemon)"}
	}
	if len(images) == 0 {
		return Result{Status: StatusOK, Detail: "no images yet"}
	}

	type answer struct {
		has bool
		err error
	}
	answers := make([]answer, len(images))
	sem := make(chan struct{}, imageCheckParallelism)
	var wg sync.WaitGroup
	for i, im := range images {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			has, err := imageHasAgent(ctx, debugfs, im.Path)
			answers[i] = answer{has, err}
		})
	}
	wg.Wait()

	var with, without, problems, fixes []string
	for i, im := range images {
		switch a := answers[i]; {
		case a.err != nil:
			problems = append(problems, fmt.Sprintf("image %s: %v", im.Name, a.err))
		case a.has:
			with = append(with, im.Name)
		default:
			without = append(without, im.Name)
			fixes = append(fixes, fmt.Sprintf("banger image rm %s && banger image build %s --from %s", im.Name, im.Name, im.Source))
		}
	}
	if len(without) == 0 && len(problems) == 0 {
		return Result{Status: StatusOK, Detail: fmt.Sprintf("%s in every image (%s)", AgentImagePath, strings.Join(with, ", "))}
	}
	var parts []string
	if len(without) > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d images lack %s (built before the agent existed; their VMs cannot be pinged): %s",
			len(without), len(images), AgentImagePath, strings.Join(without, ", ")))
	}
	parts = append(parts, problems...)
	if len(problems) > 0 {
		fixes = append(fixes, "rebuild or remove the images that cannot be read (`banger image rm NAME`)")
	}
	return Result{Status: StatusWarn, Detail: strings.Join(parts, "; "), Fix: strings.Join(fixes, "\n")}
}

// listImages reads the image rows without migrating the database: a
// doctor must not change the schema under a running daemon of another
// version.
func listImages(ctx context.Context, db string) ([]store.Image, error) {
	sdb, err := sql.Open("sqlite", "file:"+db+"?_pragma=busy_timeout(5000)&_pragma=query_only(1)")
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", db, err)
	}
	defer sdb.Close()
	ims, err := store.ListImages(ctx, sdb)
	if err != nil {
		return nil, fmt.Errorf("read images from %s: %w", db, err)
	}
	return ims, nil
}

// imageHasAgent reports whether the ext4 image at img holds AgentImagePath
// as a regular file, reading it with debugfs (without mounting or writing).
func imageHasAgent(ctx context.Context, debugfs, img string) (bool, error) {
	st, err := os.Stat(img)
	if err != nil {
		return false, fmt.Errorf("image file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return false, fmt.Errorf("%s is not a regular file", img)
	}
	out, errOut, err := runTool(ctx, debugfs, "-R", "stat "+AgentImagePath, img)
	if err != nil {
		return false, err
	}
	switch {
	case strings.Contains(out, "Type: regular"):
		return true, nil
	case strings.Contains(out, "Type: "):
		return false, nil // there, but not a program
	case strings.Contains(errOut, "File not found"):
		return false, nil
	}
	return false, fmt.Errorf("debugfs cannot read %s: %s", img, debugfsError(errOut))
}

// debugfsError picks debugfs's explanation out of its error output: the
// line saying why it could not open the image, else the last line.
func debugfsError(errOut string) string {
	var last string
	for _, l := range strings.Split(errOut, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "debugfs 1."):
			continue // the version banner
		case strings.Contains(l, "while trying to open"):
			return strings.TrimPrefix(l, "debugfs: ")
		}
		last = l
	}
	if last == "" {
		return "no explanation printed"
	}
	return last
}
