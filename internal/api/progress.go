package api

import "encoding/json"

// MethodProgress is the method name of a progress notification.
//
// A long call (an image build) can report progress. The client asks for it
// by adding the extension member "progress": true to the request object,
// next to "jsonrpc", "id", "method" and "params" (see ProgressRequest); the
// params themselves are unchanged and still decoded strictly. The daemon
// then writes zero or more notification lines
//
//	{"jsonrpc":"2.0","method":"progress","params":{"phase":"pull",...}}
//
// on the connection before the call's response line. A notification has no
// "id" member; the response always has one (null when the daemon could not
// read the request's). Notifications are best effort: the daemon coalesces
// them to about ten a second per call (a change of Phase is sent at once,
// after the last report of the previous phase), so a client must not expect
// one per report. A client that did not ask gets none, and a daemon that
// predates this extension ignores the member and just answers; clients
// skip notifications they do not understand.
const MethodProgress = "progress"

// ProgressRequest is a Request with the "progress" extension member. With
// Progress false the member is omitted and the request is a plain Request.
type ProgressRequest struct {
	Request
	Progress bool `json:"progress,omitempty"`
}

// Notification is a JSON-RPC 2.0 notification: a request without an id,
// which gets no response. The daemon sends MethodProgress notifications
// with a Progress as params.
type Notification struct {
	JSONRPC string          `json:"jsonrpc"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
}

// Progress is one progress report of a long call, sent by the daemon as a
// JSON-RPC notification (no id) before the call's response.
//
// A report describes the current state, not a delta: each one replaces the
// previous, so a client that sees only some of them still shows the right
// thing. Zero fields are unknown or do not apply.
type Progress struct {
	// Phase is a short machine word: "pull", "flatten", "customize",
	// "mkfs", "cache", ... A new phase means the previous one ended.
	Phase string `json:"phase"`
	// Message is one human line about what the phase is doing now.
	Message string `json:"message,omitempty"`
	// Layer is the 1-based layer number while pulling or flattening, of
	// Layers in all. A new layer means the previous one ended.
	Layer  int `json:"layer,omitempty"`
	Layers int `json:"layers,omitempty"`
	// Done is the bytes done in this phase (or layer, when Layer is set);
	// Total the bytes expected, 0 when unknown.
	Done  int64 `json:"done,omitempty"`
	Total int64 `json:"total,omitempty"`
}
