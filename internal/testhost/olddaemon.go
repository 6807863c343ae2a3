package testhost

import (
	"encoding/json"
	"fmt"
	"net"
	"testing"

	"github.com/bangerhq/banger/internal/api"
)

// OldDaemon serves a stand-in for a bangerd from before the newer methods:
// it answers every request "method not found" (as the daemon's RPC server
// does for an unknown method), with its build (version "old-1", pid 99) on
// the answer, until t ends. It returns the socket.
func OldDaemon(t testing.TB) string {
	t.Helper()
	return ServeUnix(t, func(c net.Conn) {
		var req api.Request
		json.NewDecoder(c).Decode(&req)
		resp := api.Response{JSONRPC: api.Version, ID: req.ID, Daemon: api.DaemonInfo{Version: "old-1", PID: 99},
			Error: &api.Error{Code: api.CodeMethodNotFound, Message: fmt.Sprintf("method %q not found", req.Method)}}
		json.NewEncoder(c).Encode(resp)
	})
}
