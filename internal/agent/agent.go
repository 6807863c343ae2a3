// Package agent is banger's guest agent protocol, shared by the guest side
// (cmd/banger-vsock-pingd) and the daemon.
//
// The channel is a byte stream: an AF_VSOCK connection (Firecracker, reached
// from the host through its hybrid vsock Unix socket) or a virtio-serial
// port (QEMU, reached through the Unix socket QEMU serves for the port).
//
// # Sessions
//
// The daemon keeps one session per guest: a yamux multiplexer over the
// channel, started after a sync phase that copes with a virtio-serial
// port's lack of connection boundaries (see session.go for the wire
// format). Sessions recover from daemon restarts, agent restarts and guest
// reboots: the next use syncs anew.
//
// Each operation is a stream: the host writes a request line with the op
// and its params, the guest answers with a result line (or refuses with a
// code and a message), then the stream carries the op's own bytes.
//
// Host side (the daemon): vm.Service.AgentSession returns the VM's live
// *Session; Session.Open(ctx, op, params, &result) opens a stream and
// returns it as a net.Conn once the guest accepted; Session.Call is Open
// for ops without bytes of their own. A refused stream is a *RemoteError
// (errors.Is ErrUnknownOpCode for an agent that lacks the op).
//
// Guest side (the agent): a *Server dispatches streams to handlers.
// Adding an operation is: a handler func(ctx, *Stream) error that decodes
// its params (Stream.Decode), then returns an error (refused; use Errorf
// for a code) or calls Stream.Accept(result) and uses the stream; and one
// Server.Handle(op, handler) line in cmd/banger-vsock-pingd. Nothing in
// this package changes. The ops so far: OpPing and OpEndSession (here).
//
// # The line protocol
//
// Before sessions the agent spoke newline-delimited JSON, and still answers
// it while no session runs (hosts send such a ping first, to recognise an
// old agent):
//
//	-> {"op":"ping","id":"5f0c..."}
//	<- {"id":"5f0c...","ok":true,"hostname":"dev","uptime_seconds":12.3,"boot_id":"...","agent_version":"..."}
//
// A request whose op is not "ping" gets {"id":...,"ok":false,"error":"unknown op"}.
// Lines that are not a JSON object, and lines longer than MaxLineBytes, are
// dropped without an answer. Ping (the host side of the line protocol)
// matches replies by id and discards everything else.
package agent

// Port is the AF_VSOCK port the guest agent listens on. Ports below 1024 need
// CAP_NET_BIND_SERVICE in the guest; 1024 is the first one that does not, so
// the agent can run without capabilities. The host reaches it with
// the Firecracker driver's DialAgent (a hybrid vsock connection).
const Port uint32 = 1024

// SerialPortName is the name of the virtio-serial port the agent serves under
// QEMU. The guest sees the port as /dev/virtio-ports/org.banger.agent (udev
// makes that link); QEMU must be given
// `-device virtserialport,chardev=...,name=org.banger.agent`.
const SerialPortName = "org.banger.agent"

// SerialDevicePath is where udev links the agent's virtio-serial port in the
// guest.
const SerialDevicePath = "/dev/virtio-ports/" + SerialPortName

// MaxLineBytes bounds one protocol line, newline included. Longer lines are
// discarded whole by both sides.
const MaxLineBytes = 4096

// OpPing is the ping: the guest's facts (Info). Over a session its result
// also carries the guest's clock.
const OpPing = "ping"

// OpEndSession asks the agent to end the session it runs the stream on and
// go back to waiting for a sync, as at its start (Session.End).
const OpEndSession = "end_session"

// ErrUnknownOp is the error text of a line-protocol reply to a request
// with any op other than OpPing.
const ErrUnknownOp = "unknown op"

// Request is one request line.
type Request struct {
	// Op is the operation; only OpPing is known.
	Op string `json:"op"`
	// ID is chosen by the host and echoed in the reply; Ping uses a
	// random 32-hex-digit nonce.
	ID string `json:"id"`
}

// Reply is one response line. When OK is false, Error says why and the guest
// facts are empty.
type Reply struct {
	// ID echoes the request's id.
	ID string `json:"id"`
	// OK is true when the ping was answered with the guest's facts.
	OK bool `json:"ok"`
	// Hostname is the guest kernel's hostname at the time of the ping.
	Hostname string `json:"hostname,omitempty"`
	// UptimeSeconds is the first field of the guest's /proc/uptime.
	UptimeSeconds float64 `json:"uptime_seconds,omitempty"`
	// BootID is the guest's /proc/sys/kernel/random/boot_id: it changes
	// at every boot, so a changed BootID means the guest rebooted.
	BootID string `json:"boot_id,omitempty"`
	// AgentVersion is the version banger-vsock-pingd was built as.
	AgentVersion string `json:"agent_version,omitempty"`
	// Error is set when OK is false: ErrUnknownOp, or why the facts could
	// not be read.
	Error string `json:"error,omitempty"`
}

// Info is what a ping reports about the guest; the fields mean what the
// Reply fields of the same names mean.
type Info struct {
	Hostname      string  `json:"hostname"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	BootID        string  `json:"boot_id"`
	AgentVersion  string  `json:"agent_version"`
	// TimeUnixNano is the guest's wall clock when it answered (set by the
	// session form of the ping only), for the host to measure the offset.
	TimeUnixNano int64 `json:"time_unix_nano,omitempty"`
}

// InfoFunc gathers Info for one ping. It is called once per ping request,
// so a changed hostname shows up in the next reply. When it fails, the
// reply has OK false and the error's text.
type InfoFunc func() (Info, error)
