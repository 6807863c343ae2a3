package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// serialRetry is the pause after a failed open, and after the host side of
// the port went away (reads return end of file while no host client is
// connected) when the port cannot signal the host's return (waitForHost).
const serialRetry = 200 * time.Millisecond

// serialMissingMax caps the back-off while the port does not exist at all
// (Firecracker guests never have it).
const serialMissingMax = 10 * time.Second

// serialPort is what the serving loop needs of an open port.
type serialPort interface {
	io.ReadWriteCloser
}

// serialConfig parametrises the loop so tests can stand in for the device.
type serialConfig struct {
	path string
	open func(path string) (serialPort, error)
	// serve serves an open port until end of file (no host connected),
	// an error, or ctx is done.
	serve func(ctx context.Context, port serialPort) error
	log   *slog.Logger
	retry time.Duration // pause after end of file or an error
	// waitHost, when set, is the pause after end of file instead of
	// sleeping retry: it returns when the host connects (or earlier).
	waitHost func(ctx context.Context, port serialPort, retry time.Duration)
	// missingMax caps the growing pause while the port is absent.
	missingMax time.Duration
	// sysfs is /sys/class/virtio-ports; when non-empty and path is missing,
	// the port is looked up there by the base name of path.
	sysfs string
}

// ServeSerialPort serves sessions (see Server) on the virtio-serial port at
// path (normally SerialDevicePath) until ctx is done, then returns an error
// wrapping ctx.Err(). It never gives up: while the port does not exist it
// waits, looking again with a growing pause of up to 10 s (and falling back
// to finding the port by name under /sys/class/virtio-ports, for guests where
// udev has not made the link); while no host client is connected, reads end
// at once with end of file and it waits for the host to connect (SIGIO, see
// waitForHost; without it, it retries every 200 ms); on any other error it
// closes the port and opens it again. log gets one line per state change,
// not one per retry.
func (s *Server) ServeSerialPort(ctx context.Context, path string) error {
	return serveSerial(ctx, serialConfig{
		path: path,
		open: openSerialPort,
		serve: func(ctx context.Context, port serialPort) error {
			dc, ok := port.(deadlineConn)
			if !ok {
				return fmt.Errorf("serial port %s has no deadlines", path)
			}
			return s.serveChannel(ctx, dc)
		},
		log:        s.log,
		retry:      serialRetry,
		waitHost:   waitForHost,
		missingMax: serialMissingMax,
		sysfs:      "/sys/class/virtio-ports",
	})
}

// openSerialPort opens a virtio-serial port (or a pty standing in for one)
// read-write. O_NOCTTY keeps a tty from becoming our controlling terminal.
// Character devices are pollable, so the *os.File has working deadlines.
func openSerialPort(path string) (serialPort, error) {
	return os.OpenFile(path, os.O_RDWR|syscall.O_NOCTTY, 0)
}

func serveSerial(ctx context.Context, cfg serialConfig) error {
	delay := cfg.retry     // grows while the port is missing or keeps failing
	missingLogged := false // "not present" is logged once per absence
	var lastErr string     // the last error logged: each kind is logged once in a row
	logOnce := func(msg, path string, err error) {
		if err.Error() != lastErr {
			cfg.log.Warn(msg, "path", path, "err", err)
			lastErr = err.Error()
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("serve agent on %s: %w", cfg.path, err)
		}
		path := cfg.path
		port, err := cfg.open(path)
		if errors.Is(err, fs.ErrNotExist) && cfg.sysfs != "" {
			if dev, ok := findVirtioPort(cfg.sysfs, filepath.Base(cfg.path)); ok {
				path = dev
				port, err = cfg.open(path)
			}
		}
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				logOnce("cannot open serial port; retrying", path, err)
			} else if !missingLogged {
				cfg.log.Info("serial port not present; waiting for it", "path", cfg.path)
				missingLogged = true
			}
			sleepCtx(ctx, delay)
			delay = min(2*delay, cfg.missingMax)
			continue
		}
		if missingLogged || lastErr == "" {
			cfg.log.Info("serving serial port", "path", path)
		}
		missingLogged = false
		start := time.Now()
		err = serveOpenPort(ctx, cfg, port)
		port.Close()
		if ctx.Err() != nil {
			continue // reported at the top of the loop
		}
		logOnce("serial port failed; reopening", path, err)
		if time.Since(start) > cfg.missingMax {
			// It worked for a while: this is a new problem.
			delay, lastErr = cfg.retry, ""
		}
		sleepCtx(ctx, delay)
		delay = min(2*delay, cfg.missingMax)
	}
}

// serveOpenPort runs cfg.serve on port again and again: each end of file means no
// host client is connected (yet, or any more), which a virtio-serial port
// reports at once and repeatedly, so it pauses before the next try. It
// returns on any other error, or when ctx is done.
func serveOpenPort(ctx context.Context, cfg serialConfig, port serialPort) error {
	for {
		err := cfg.serve(ctx, port)
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if cfg.waitHost != nil {
			cfg.waitHost(ctx, port, cfg.retry)
		} else {
			sleepCtx(ctx, cfg.retry)
		}
	}
}

// hostWaitMax is how long waitForHost waits for the kernel's signal before
// it looks again anyway.
const hostWaitMax = time.Second

// waitForHost returns when the host side of the virtio-serial port
// connects, ctx is done, or hostWaitMax has passed: the kernel's
// virtio_console sends SIGIO to the owner of a port opened with O_ASYNC
// when the host connects (a control message) and when data arrives. So a
// new host connection, a clone's above all, is answered at once rather
// than after the next retry. Without O_ASYNC (not a *os.File, fcntl
// refused) it sleeps retry, as before.
func waitForHost(ctx context.Context, port serialPort, retry time.Duration) {
	f, ok := port.(*os.File)
	if !ok {
		sleepCtx(ctx, retry)
		return
	}
	waitSIGIO(ctx, f, retry, hostWaitMax, func(fd int) bool {
		// A port without a host reports POLLHUP at once.
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err == nil && n == 1 && fds[0].Revents&unix.POLLHUP == 0
	})
}

// waitSIGIO sets O_ASYNC on f (owner: this process) and waits for SIGIO,
// ctx or max; ready is asked once after arming, for an event that came
// before. O_ASYNC is cleared again on return, so a session's data does not
// signal. When f cannot be armed it sleeps fallback instead.
func waitSIGIO(ctx context.Context, f *os.File, fallback, max time.Duration, ready func(fd int) bool) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGIO)
	defer signal.Stop(sig)
	rc, err := f.SyscallConn()
	if err != nil {
		sleepCtx(ctx, fallback)
		return
	}
	setAsync := func(on bool) (err error) {
		cerr := rc.Control(func(fd uintptr) {
			var fl int
			if fl, err = unix.FcntlInt(fd, unix.F_GETFL, 0); err != nil {
				return
			}
			if on {
				if _, err = unix.FcntlInt(fd, unix.F_SETOWN, os.Getpid()); err != nil {
					return
				}
				fl |= unix.O_ASYNC
			} else {
				fl &^= unix.O_ASYNC
			}
			_, err = unix.FcntlInt(fd, unix.F_SETFL, fl)
		})
		return errors.Join(cerr, err)
	}
	if setAsync(true) != nil {
		sleepCtx(ctx, fallback)
		return
	}
	defer setAsync(false)
	isReady := false
	_ = rc.Control(func(fd uintptr) { isReady = ready(int(fd)) })
	if isReady {
		return
	}
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-sig:
	case <-ctx.Done():
	case <-t.C:
	}
}

// findVirtioPort looks for the port called name under sysfs
// (/sys/class/virtio-ports/vportNpM/name) and returns its /dev node.
func findVirtioPort(sysfs, name string) (string, bool) {
	entries, err := os.ReadDir(sysfs)
	if err != nil {
		return "", false
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(sysfs, e.Name(), "name"))
		if err == nil && strings.TrimSpace(string(b)) == name {
			return "/dev/" + e.Name(), true
		}
	}
	return "", false
}
