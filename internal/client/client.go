// Package client is the typed client for bangerd's JSON-RPC API.
//
// Errors returned by the daemon unwrap to the sentinels in package api, so
// callers test them with IsNotFound, IsExists or errors.Is.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/progress"
)

// ErrDaemonNotRunning is returned when nothing listens on the socket.
var ErrDaemonNotRunning = errors.New("bangerd is not running")

// Client talks to one daemon socket. It is safe for concurrent use.
type Client struct {
	Socket string
	// LastDaemon is the build info of the daemon that answered last.
	lastDaemon atomic.Pointer[api.DaemonInfo]
	nextID     atomic.Int64
}

// New returns a client for the daemon listening on socket.
func New(socket string) *Client { return &Client{Socket: socket} }

// LastDaemon returns the build info from the most recent response, or the
// zero value before any call succeeded.
func (c *Client) LastDaemon() api.DaemonInfo {
	if p := c.lastDaemon.Load(); p != nil {
		return *p
	}
	return api.DaemonInfo{}
}

// Call invokes method with params and decodes the result into out (which may
// be nil). Cancelling ctx closes the connection, which cancels the request in
// the daemon. When ctx carries a progress reporter (progress.With), the call
// asks for progress and hands it each report (see CallProgress); otherwise
// notifications the daemon sends before the response are skipped.
func (c *Client) Call(ctx context.Context, method string, params, out any) error {
	return c.CallProgress(ctx, method, params, out, progress.From(ctx))
}

// CallProgress is Call for a long call that reports progress: it asks the
// daemon for progress notifications (see api.ProgressRequest) and calls
// onProgress with each one, in order, on the calling goroutine, until the
// response arrives. onProgress must not block for long: the daemon's
// notifications wait in the connection meanwhile. With a nil onProgress no
// progress is asked for and CallProgress is Call. A daemon that does not
// send progress still answers; a notification that cannot be decoded is
// skipped, as progress is best effort.
func (c *Client) CallProgress(ctx context.Context, method string, params, result any, onProgress func(api.Progress)) error {
	conn, _, err := c.roundTrip(ctx, method, params, result, onProgress)
	if conn != nil {
		conn.Close()
	}
	return err
}

// CallStream calls a streaming method (see api.Stream): it decodes the
// response's result into result and returns the connection, which then
// carries the method's bytes; the caller closes it. Cancelling ctx
// interrupts the connection's I/O until it is closed.
func (c *Client) CallStream(ctx context.Context, method string, params, result any) (*StreamConn, error) {
	conn, br, err := c.roundTrip(ctx, method, params, result, nil)
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, err
	}
	return &StreamConn{conn: conn, r: br}, nil
}

// StreamConn is a streaming method's connection after its response.
type StreamConn struct {
	conn *ctxConn
	r    *bufio.Reader
}

func (s *StreamConn) Read(b []byte) (int, error)  { return s.r.Read(b) }
func (s *StreamConn) Write(b []byte) (int, error) { return s.conn.Write(b) }

// CloseWrite ends the client's direction; the daemon reads end of file.
func (s *StreamConn) CloseWrite() error { return s.conn.UnixConn.CloseWrite() }

// Close closes the connection.
func (s *StreamConn) Close() error { return s.conn.Close() }

// ctxConn is a connection whose I/O ctx interrupts until Close.
type ctxConn struct {
	*net.UnixConn
	stop func() bool
}

func (c *ctxConn) Close() error {
	c.stop()
	return c.UnixConn.Close()
}

// roundTrip sends one request and reads its response (passing progress
// notifications to onProgress). It returns the connection and its reader
// positioned after the response, also with an error, when it got as far
// as dialing.
func (c *Client) roundTrip(ctx context.Context, method string, params, result any, onProgress func(api.Progress)) (*ctxConn, *bufio.Reader, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, nil, fmt.Errorf("%w (socket %s): start it with `bangerd` or run any banger command, which starts it", ErrDaemonNotRunning, c.Socket)
		}
		return nil, nil, fmt.Errorf("connect to bangerd at %s: %w", c.Socket, err)
	}
	uc := raw.(*net.UnixConn)
	conn := &ctxConn{UnixConn: uc, stop: context.AfterFunc(ctx, func() { uc.SetDeadline(time.Unix(1, 0)) })}

	req := api.ProgressRequest{Request: api.Request{JSONRPC: api.Version, Method: method}, Progress: onProgress != nil}
	req.ID, _ = json.Marshal(c.nextID.Add(1))
	if params != nil {
		if req.Params, err = json.Marshal(params); err != nil {
			return conn, nil, fmt.Errorf("encode %s params: %w", method, err)
		}
	}
	b, _ := json.Marshal(req)
	_, werr := conn.Write(append(b, '\n'))
	// Even when the write fails, the daemon may have answered already (it
	// refuses another user's connection before reading): read that answer.
	r := bufio.NewReaderSize(conn, 64<<10)
	var resp incoming
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			if werr != nil {
				return conn, nil, c.ctxErr(ctx, fmt.Errorf("send %s: %w", method, werr))
			}
			return conn, nil, c.ctxErr(ctx, fmt.Errorf("read %s response: %w (the daemon may have exited; see its log)", method, err))
		}
		if resp, err = decodeLine(line); err != nil {
			return conn, nil, fmt.Errorf("decode %s response: %w", method, err)
		}
		if !resp.isNotification() {
			break
		}
		resp.deliver(onProgress)
	}
	if !bytes.Equal(resp.ID, req.ID) && !bytes.Equal(resp.ID, []byte("null")) {
		return conn, nil, fmt.Errorf("%s response has id %s, want %s: not the answer to this request", method, resp.ID, req.ID)
	}
	c.lastDaemon.Store(&resp.Daemon)
	if resp.Error != nil {
		return conn, nil, &api.RemoteError{Code: resp.Error.Code, Message: resp.Error.Message}
	}
	switch out := result.(type) {
	case nil:
	case *json.RawMessage:
		// As the daemon sent it, not scanned here (see decodeLine): the
		// caller decodes or indents it, which checks it.
		*out = resp.Result
	default:
		if err := json.Unmarshal(resp.Result, result); err != nil {
			return conn, nil, fmt.Errorf("decode %s result: %w", method, err)
		}
	}
	return conn, r, nil
}

// decodeLine decodes one line from the daemon. The daemon writes a response
// as {"jsonrpc","id","daemon", then "result" or "error"} (the order of
// api.Response): such a line is split without scanning the result, which
// its reader decodes or indents anyway (for a vm.list of 1,000 VMs, half a
// megabyte, the scan was a third of the CLI's time). Any other line is
// decoded in full.
func decodeLine(line []byte) (incoming, error) {
	if m, ok := splitResponse(line); ok {
		return m, nil
	}
	var m incoming
	err := json.Unmarshal(line, &m)
	return m, err
}

// splitResponse reads the members before "result" of a response the daemon
// wrote and takes the rest of the line, up to the closing brace, as the
// result. ok is false when the line is not such a response.
func splitResponse(line []byte) (m incoming, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(line))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return m, false
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		key, isKey := t.(string)
		if err != nil || !isKey || seen[key] {
			return m, false
		}
		seen[key] = true
		switch key {
		case "jsonrpc":
			err = dec.Decode(&m.JSONRPC)
		case "id":
			err = dec.Decode(&m.ID)
		case "daemon":
			err = dec.Decode(&m.Daemon)
		case "result":
			if !seen["jsonrpc"] || !seen["id"] || !seen["daemon"] {
				return m, false
			}
			rest := bytes.TrimSpace(line[dec.InputOffset():])
			rest, colon := bytes.CutPrefix(rest, []byte(":"))
			rest, brace := bytes.CutSuffix(rest, []byte("}"))
			if !colon || !brace {
				return m, false
			}
			m.Result = bytes.TrimSpace(rest)
			return m, len(m.Result) > 0
		default:
			return m, false // an error, a notification, or a member we do not know
		}
		if err != nil {
			return m, false
		}
	}
	return m, false
}

// incoming is one line from the daemon: the response, or a notification.
type incoming struct {
	api.Response
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// isNotification reports whether m is a notification: a "method" and no
// "id" (a response always has an id, null when the daemon could not read
// the request's).
func (m *incoming) isNotification() bool { return m.ID == nil && m.Method != "" }

// deliver passes a progress notification to onProgress, when not nil. Other
// notifications, and progress that cannot be decoded, are skipped:
// progress is best effort and must not fail the call.
func (m *incoming) deliver(onProgress func(api.Progress)) {
	if onProgress == nil || m.Method != api.MethodProgress {
		return
	}
	var p api.Progress
	if err := json.Unmarshal(m.Params, &p); err != nil {
		return
	}
	onProgress(p)
}

func (c *Client) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// IsNotFound reports whether err means the object does not exist.
func IsNotFound(err error) bool { return errors.Is(err, api.ErrNotFound) }

// IsExists reports whether err means the object already exists.
func IsExists(err error) bool { return errors.Is(err, api.ErrExists) }

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (api.DaemonStatus, error) {
	return call[api.DaemonStatus](ctx, c, api.MethodDaemonStatus, nil)
}

// Info returns which daemon answers (its build), without the VM counts
// Status observes: the cheap check before a command.
func (c *Client) Info(ctx context.Context) (api.DaemonInfo, error) {
	return call[api.DaemonInfo](ctx, c, api.MethodDaemonInfo, nil)
}

// CreateVM creates (and unless p.NoStart, boots) a VM. A progress reporter
// in ctx gets its phases.
func (c *Client) CreateVM(ctx context.Context, p api.VMCreateParams) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMCreate, p)
}

// ListVMs returns every VM.
func (c *Client) ListVMs(ctx context.Context) ([]api.VM, error) {
	var l api.VMList
	err := c.Call(ctx, api.MethodVMList, nil, &l)
	return l.VMs, err
}

// ListVMsJSON returns the vm.list result as the daemon sent it, for callers
// that only print it.
func (c *Client) ListVMsJSON(ctx context.Context) (json.RawMessage, error) {
	return call[json.RawMessage](ctx, c, api.MethodVMList, nil)
}

// GetVM returns one VM by name or id.
func (c *Client) GetVM(ctx context.Context, name string) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMGet, api.VMRef{Name: name})
}

// StartVM boots a stopped VM and waits until it answers SSH. A progress
// reporter in ctx gets its phases.
func (c *Client) StartVM(ctx context.Context, name string) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMStart, api.VMRef{Name: name})
}

// StopVM stops a VM, gracefully unless force. A progress reporter in ctx
// gets its phases.
func (c *Client) StopVM(ctx context.Context, name string, force bool) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMStop, api.VMStopParams{Name: name, Force: force})
}

// RestartVM stops then starts a VM. A progress reporter in ctx gets its
// phases.
func (c *Client) RestartVM(ctx context.Context, name string) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMRestart, api.VMRef{Name: name})
}

// PauseVM freezes a running VM's guest.
func (c *Client) PauseVM(ctx context.Context, name string) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMPause, api.VMRef{Name: name})
}

// ResumeVM lets a paused VM's guest run again.
func (c *Client) ResumeVM(ctx context.Context, name string) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMResume, api.VMRef{Name: name})
}

// DeleteVM deletes a VM; a running VM needs force. A progress reporter in
// ctx gets its phases.
func (c *Client) DeleteVM(ctx context.Context, name string, force bool) error {
	return c.Call(ctx, api.MethodVMDelete, api.VMStopParams{Name: name, Force: force}, nil)
}

// SSHInfo returns how to reach a VM with OpenSSH.
func (c *Client) SSHInfo(ctx context.Context, name string) (api.SSHInfo, error) {
	return call[api.SSHInfo](ctx, c, api.MethodVMSSHInfo, api.VMRef{Name: name})
}

// ForwardVM adds (or with p.Remove removes) a port forward of a VM and
// returns the VM.
func (c *Client) ForwardVM(ctx context.Context, p api.VMForwardParams) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMForward, p)
}

// MountVM adds (or with p.Remove removes) a shared folder of a stopped VM
// and returns the VM.
func (c *Client) MountVM(ctx context.Context, p api.VMMountParams) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMMount, p)
}

// SSHConfig returns the OpenSSH config for reaching VMs by name.
func (c *Client) SSHConfig(ctx context.Context) (api.SSHConfig, error) {
	return call[api.SSHConfig](ctx, c, api.MethodSSHConfig, nil)
}

// PingVM asks the VM's guest agent whether it is alive.
func (c *Client) PingVM(ctx context.Context, name string, timeout time.Duration) (api.PingResult, error) {
	return call[api.PingResult](ctx, c, api.MethodVMPing, api.VMPingParams{Name: name, TimeoutMS: int(timeout / time.Millisecond)})
}

// BuildImage builds an image; it blocks until the build ends, calling
// onProgress (when not nil) with the daemon's progress reports meanwhile.
// A nil onProgress asks for no progress.
func (c *Client) BuildImage(ctx context.Context, p api.ImageBuildParams, onProgress func(api.Progress)) (api.Image, error) {
	var im api.Image
	err := c.CallProgress(ctx, api.MethodImageBuild, p, &im, onProgress)
	return im, err
}

// ListImages returns every image.
func (c *Client) ListImages(ctx context.Context) ([]api.Image, error) {
	var l api.ImageList
	err := c.Call(ctx, api.MethodImageList, nil, &l)
	return l.Images, err
}

// CheckImageAgent asks the daemon whether every image holds the guest
// agent (the image-agent check of `banger doctor`).
func (c *Client) CheckImageAgent(ctx context.Context) (api.CheckResult, error) {
	return call[api.CheckResult](ctx, c, api.MethodImageCheckAgent, nil)
}

// ExecVM starts a command in a VM (vm.exec) and returns the stream that
// carries its frames (package guestexec) once the guest runs it.
func (c *Client) ExecVM(ctx context.Context, p api.VMExecParams) (*StreamConn, api.VMExecResult, error) {
	var res api.VMExecResult
	sc, err := c.CallStream(ctx, api.MethodVMExec, p, &res)
	return sc, res, err
}

// CopyOutVM starts a copy from a VM (vm.copy_out): the stream carries a
// tar stream (package guestcp).
func (c *Client) CopyOutVM(ctx context.Context, p api.VMCopyOutParams) (*StreamConn, api.VMCopyOutResult, error) {
	var res api.VMCopyOutResult
	sc, err := c.CallStream(ctx, api.MethodVMCopyOut, p, &res)
	return sc, res, err
}

// CopyInVM starts a copy into a VM (vm.copy_in): the caller sends a tar
// stream, ends its direction and reads the guest's answer.
func (c *Client) CopyInVM(ctx context.Context, p api.VMCopyInParams) (*StreamConn, error) {
	return c.CallStream(ctx, api.MethodVMCopyIn, p, nil)
}

// StopDaemon asks the daemon to exit. Running VMs keep running.
func (c *Client) StopDaemon(ctx context.Context) error {
	return c.Call(ctx, api.MethodDaemonStop, nil, nil)
}

// call is Call for a method whose result decodes into a T.
func call[T any](ctx context.Context, c *Client, method string, params any) (T, error) {
	var out T
	err := c.Call(ctx, method, params, &out)
	return out, err
}
