package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/client"
	"github.com/bangerhq/banger/internal/config"
	"github.com/bangerhq/banger/internal/paths"
	"github.com/bangerhq/banger/internal/version"
	"github.com/bangerhq/banger/internal/vmm/proc"
)

// daemonStartTimeout bounds the wait for a freshly started daemon; its first
// start may probe whether KVM can run guests, which takes seconds.
const daemonStartTimeout = 60 * time.Second

// Connect is connect, for the TUI's command (package tuicmd).
func Connect(ctx context.Context) (*client.Client, error) { return connect(ctx) }

// connect returns a client for a daemon of this build: it starts bangerd
// when none runs, and restarts it when the running one is a different build
// (after a rebuild). VMs keep running across the restart.
func connect(ctx context.Context) (*client.Client, error) {
	dirs, err := paths.Resolve()
	if err != nil {
		return nil, err
	}
	if err := paths.CheckSocketPath(dirs.Socket()); err != nil {
		return nil, err
	}
	c := client.New(dirs.Socket())
	info, err := daemonInfo(ctx, c)
	switch {
	case errors.Is(err, client.ErrDaemonNotRunning):
		if err := startDaemon(dirs); err != nil {
			return nil, err
		}
		return c, waitDaemon(ctx, c, dirs)
	case err != nil:
		return nil, err
	}
	if reason := stale(info); reason != "" {
		fmt.Fprintf(os.Stderr, "banger: restarting bangerd (%s); running VMs are not affected\n", reason)
		if err := restartDaemon(ctx, c, dirs); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// daemonInfo returns the build of the daemon at c. A daemon from before
// daemon.info answers "method not found", with its build on the answer
// like on every other: it is stale, and says so.
func daemonInfo(ctx context.Context, c *client.Client) (api.DaemonInfo, error) {
	info, err := c.Info(ctx)
	var re *api.RemoteError
	if errors.As(err, &re) && re.Code == api.CodeMethodNotFound {
		return c.LastDaemon(), nil
	}
	return info, err
}

// stale says why the daemon is not this CLI's build, or "" when it is.
func stale(d api.DaemonInfo) string {
	if d.Version != version.String() {
		return fmt.Sprintf("daemon version %s, cli version %s", d.Version, version.String())
	}
	if d.Executable != "" {
		if id := version.ExecutableID(d.Executable); id != "" && id != d.ExecutableID {
			return "its binary " + d.Executable + " was rebuilt"
		}
	}
	return ""
}

// bangerdPath finds the daemon binary (see companionPath).
func bangerdPath() (string, error) { return companionPath("bangerd") }

// companionPath finds one of the binaries that come with banger (bangerd,
// banger-tui): beside this executable, else in $PATH.
func companionPath(name string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			p := filepath.Join(filepath.Dir(exe), name)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found beside banger or in $PATH: build it with `make build` or install banger with `make install`", name)
	}
	return p, nil
}

// startDaemon launches bangerd detached (own session, output to its log).
func startDaemon(dirs paths.Dirs) error {
	bin, err := bangerdPath()
	if err != nil {
		return err
	}
	if err := dirs.Ensure(); err != nil {
		return err
	}
	// A config the daemon would refuse is reported here, at once, rather
	// than as a daemon that never answers.
	if _, err := config.Load(dirs.ConfigFile()); err != nil {
		return err
	}
	logf, err := os.OpenFile(dirs.DaemonLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open daemon log: %w", err)
	}
	defer logf.Close()
	// Nothing this command inherited reaches the daemon: a lock its
	// caller holds (flock FILE banger ...) would be held until the
	// daemon exits.
	if err := proc.CloseOnExec(); err != nil {
		return fmt.Errorf("keep this command's descriptors from the daemon: %w", err)
	}
	cmd := exec.Command(bin)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	return cmd.Process.Release()
}

// waitDaemon polls until the daemon answers.
func waitDaemon(ctx context.Context, c *client.Client, dirs paths.Dirs) error {
	deadline := time.Now().Add(daemonStartTimeout)
	for {
		_, err := c.Info(ctx)
		if err == nil {
			return nil
		}
		if !errors.Is(err, client.ErrDaemonNotRunning) && !isConnReset(err) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bangerd did not answer within %s: see its log %s", daemonStartTimeout, dirs.DaemonLog())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// stopDaemon asks the daemon to exit and waits until its socket is gone.
func stopDaemon(ctx context.Context, c *client.Client, dirs paths.Dirs) error {
	if err := c.StopDaemon(ctx); err != nil {
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(dirs.Socket()); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("bangerd did not exit within 15s: see %s", dirs.DaemonLog())
}

func restartDaemon(ctx context.Context, c *client.Client, dirs paths.Dirs) error {
	if err := stopDaemon(ctx, c, dirs); err != nil {
		return err
	}
	if err := startDaemon(dirs); err != nil {
		return err
	}
	return waitDaemon(ctx, c, dirs)
}
