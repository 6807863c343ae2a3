package daemon

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"sync"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/guestcp"
	"github.com/bangerhq/banger/internal/guestexec"
)

// splice copies bytes both ways between the client's connection and a
// guest agent stream until both directions have ended, passing each end of
// file on as a half-close; ctx ending (the daemon stops) cuts both. The
// guest stream is closed when splice returns.
func splice(ctx context.Context, client StreamConn, guest net.Conn) error {
	defer guest.Close()
	stop := context.AfterFunc(ctx, func() { guest.Close() })
	defer stop()
	var wg sync.WaitGroup
	var toGuestErr error
	wg.Go(func() {
		_, toGuestErr = io.Copy(guest, client)
		closeWrite(guest)
	})
	_, err := io.Copy(client, guest)
	client.CloseWrite()
	if err != nil {
		// The guest side broke: the client's copy may be blocked in a
		// read that nothing else ends.
		guest.Close()
		if c, ok := client.(io.Closer); ok {
			c.Close()
		}
	}
	wg.Wait()
	if err == nil {
		err = toGuestErr
	}
	return err
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// exec is vm.exec: the command starts in the guest, then its frames pass
// through unchanged.
func (d *Daemon) exec(ctx context.Context, p api.VMExecParams) (*Stream, error) {
	var ep guestexec.Params
	if err := json.Unmarshal(p.Exec, &ep); err != nil {
		return nil, api.Errorf(api.ErrInvalid, "invalid exec params: %v", err)
	}
	if err := ep.Validate(); err != nil {
		return nil, api.Errorf(api.ErrInvalid, "%v", err)
	}
	var res guestexec.Result
	c, err := d.vms.OpenAgentStream(ctx, p.Name, guestexec.Op, ep, &res)
	if err != nil {
		return nil, err
	}
	return &Stream{
		Result: api.VMExecResult{PID: res.PID},
		Serve:  func(ctx context.Context, conn StreamConn) error { return splice(ctx, conn, c) },
	}, nil
}

// copyOut is vm.copy_out: the guest's tar stream passes through.
func (d *Daemon) copyOut(ctx context.Context, p api.VMCopyOutParams) (*Stream, error) {
	var res guestcp.OutResult
	c, err := d.vms.OpenAgentStream(ctx, p.Name, guestcp.OpOut, guestcp.OutParams{Path: p.Path, Recursive: p.Recursive}, &res)
	if err != nil {
		return nil, err
	}
	return &Stream{
		Result: api.VMCopyOutResult{Dir: res.Dir, Bytes: res.Bytes},
		Serve:  func(ctx context.Context, conn StreamConn) error { return splice(ctx, conn, c) },
	}, nil
}

// copyIn is vm.copy_in: the client's tar stream passes through, then the
// guest's answer.
func (d *Daemon) copyIn(ctx context.Context, p api.VMCopyInParams) (*Stream, error) {
	c, err := d.vms.OpenAgentStream(ctx, p.Name, guestcp.OpIn, guestcp.InParams{Dest: p.Dest, Name: p.Source, Dir: p.Dir}, nil)
	if err != nil {
		return nil, err
	}
	return &Stream{
		Result: empty{},
		Serve:  func(ctx context.Context, conn StreamConn) error { return splice(ctx, conn, c) },
	}, nil
}
