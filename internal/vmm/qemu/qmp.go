package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// QMP is a minimal client for the QEMU Machine Protocol on a Unix socket.
// It runs one command at a time; asynchronous events that arrive while a
// command waits for its reply are skipped. QEMU serves one QMP client per
// socket at a time, so callers should Close a QMP promptly.
type QMP struct {
	conn     net.Conn
	dec      *json.Decoder
	mu       sync.Mutex
	nextID   uint64
	greeting QMPGreeting
}

// QMPGreeting is the banner QEMU sends when a client connects.
type QMPGreeting struct {
	Version struct {
		QEMU struct {
			Major int `json:"major"`
			Minor int `json:"minor"`
			Micro int `json:"micro"`
		} `json:"qemu"`
		Package string `json:"package"`
	} `json:"version"`
	Capabilities []string `json:"capabilities"`
}

// QMPError is an error reply from QEMU to a command.
type QMPError struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

// Error returns "qmp <command>: <class>: <description>".
func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// qmpMessage is any message from the server: greeting, reply or event.
type qmpMessage struct {
	QMP    *QMPGreeting    `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *QMPError       `json:"error"`
	Event  string          `json:"event"`
	ID     *uint64         `json:"id"`
}

// DialQMP connects to the QMP socket at path, reads the greeting and
// negotiates capabilities (qmp_capabilities), after which the returned
// client accepts commands. The whole handshake is bounded by timeout and by
// ctx.
func DialQMP(ctx context.Context, path string, timeout time.Duration) (*QMP, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("dial qmp %s: %w", path, err)
	}
	c := &QMP{conn: conn, dec: json.NewDecoder(conn)}
	if err := c.handshake(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp %s: %w", path, err)
	}
	return c, nil
}

func (c *QMP) handshake(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	stop := c.watch(ctx)
	defer stop()
	var m qmpMessage
	if err := c.dec.Decode(&m); err != nil {
		return fmt.Errorf("read greeting: %w", c.ctxErr(ctx, err))
	}
	if m.QMP == nil {
		return errors.New("read greeting: first message is not a QMP greeting")
	}
	c.greeting = *m.QMP
	if _, err := c.executeLocked(ctx, "qmp_capabilities", nil, nil); err != nil {
		return err
	}
	return nil
}

// Greeting returns the banner QEMU sent on connect.
func (c *QMP) Greeting() QMPGreeting { return c.greeting }

// Execute runs cmd with args (nil for none; otherwise anything that
// marshals to a JSON object) and returns the "return" value. A QEMU error
// reply is returned as a *QMPError. ctx bounds the wait; after a
// cancellation or I/O error the connection is unusable and should be
// closed.
func (c *QMP) Execute(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	stop := c.watch(ctx)
	defer stop()
	return c.executeLocked(ctx, cmd, args, nil)
}

// ExecuteFile is Execute that passes f's descriptor with the command
// (SCM_RIGHTS), as QMP's getfd and add-fd expect.
func (c *QMP) ExecuteFile(ctx context.Context, cmd string, args any, f *os.File) (json.RawMessage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	stop := c.watch(ctx)
	defer stop()
	return c.executeLocked(ctx, cmd, args, f)
}

func (c *QMP) executeLocked(ctx context.Context, cmd string, args any, f *os.File) (json.RawMessage, error) {
	c.nextID++
	id := c.nextID
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        uint64 `json:"id"`
	}{cmd, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: encode arguments: %w", cmd, err)
	}
	if f != nil {
		uc, ok := c.conn.(*net.UnixConn)
		if !ok {
			return nil, fmt.Errorf("qmp %s: passing a descriptor needs a Unix socket", cmd)
		}
		if _, _, err := uc.WriteMsgUnix(append(b, '\n'), unix.UnixRights(int(f.Fd())), nil); err != nil {
			return nil, fmt.Errorf("qmp %s: send: %w", cmd, c.ctxErr(ctx, err))
		}
	} else if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: send: %w", cmd, c.ctxErr(ctx, err))
	}
	for {
		var m qmpMessage
		if err := c.dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("qmp %s: read reply: %w", cmd, c.ctxErr(ctx, err))
		}
		if m.Event != "" || m.ID == nil || *m.ID != id {
			continue // an event, or a reply to an abandoned command
		}
		if m.Error != nil {
			m.Error.Command = cmd
			return nil, m.Error
		}
		if m.Return == nil {
			return nil, fmt.Errorf("qmp %s: reply has neither return nor error", cmd)
		}
		return m.Return, nil
	}
}

// watch applies ctx to the connection: its deadline becomes the I/O
// deadline, and cancellation interrupts blocked I/O at once.
func (c *QMP) watch(ctx context.Context) (stop func()) {
	dl, _ := ctx.Deadline() // zero time means no deadline
	c.conn.SetDeadline(dl)
	unregister := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	return func() { unregister() }
}

// ctxErr prefers the context's error over the I/O error it caused. The
// connection deadline equals ctx's deadline, so an I/O timeout can fire a
// moment before ctx reports DeadlineExceeded; it is the same event.
func (c *QMP) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	if _, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}

// Close closes the connection.
func (c *QMP) Close() error { return c.conn.Close() }
