package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// serialRetry is the pause after the host side of the port went away (reads
// return end of file while no host client is connected) and after a failed
// open. It bounds the agent's wake-ups to five a second and adds at most this
// much to the first ping of a new host connection.
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
// at once with end of file and it retries every 200 ms; on any other error it
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
		sleepCtx(ctx, cfg.retry)
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
