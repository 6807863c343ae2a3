package qemu

import (
	"errors"
	"fmt"
	"os"

	"github.com/bangerhq/banger/internal/network"
	"github.com/bangerhq/banger/internal/safesocket"
	"github.com/bangerhq/banger/internal/vmm"
)

// openFiles opens files for QEMU, in descriptor order (see File). The
// sockets it binds are the caller's to remove once QEMU is gone; on error
// it closes what it opened and removes the sockets it bound.
func openFiles(files []File) ([]*os.File, error) {
	var out []*os.File
	var bound []string
	fail := func(err error) ([]*os.File, error) {
		closeFiles(out)
		return nil, errors.Join(err, vmm.RemoveFiles(bound...))
	}
	for _, f := range files {
		var fh *os.File
		var err error
		switch f.How {
		case HowRead:
			fh, err = os.Open(f.Path)
		case HowReadWrite:
			fh, err = os.OpenFile(f.Path, os.O_RDWR, 0)
		case HowAppend:
			fh, err = os.OpenFile(f.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		case HowTAP:
			fh, err = network.OpenTAP(f.Path)
		case HowConnect:
			fh, err = dialUnix(f.Path)
		case HowListen:
			fh, err = listen(f.Path)
			if err == nil {
				bound = append(bound, f.Path)
			}
		default:
			err = fmt.Errorf("%s: unknown way to open %q", f.Path, f.How)
		}
		if err != nil {
			return fail(fmt.Errorf("open %s for qemu: %w", f.Path, err))
		}
		out = append(out, fh)
	}
	return out, nil
}

// listen binds a Unix socket at p, mode 0600 (see safesocket.Listen), and
// returns its listening descriptor; the socket file stays when the
// descriptor closes.
func listen(p string) (*os.File, error) {
	l, err := safesocket.Listen(p, "an earlier qemu of this VM")
	if err != nil {
		return nil, err
	}
	defer l.Close()
	f, err := l.File()
	if err != nil {
		os.Remove(p)
		return nil, err
	}
	return f, nil
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}
