package client

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/progress"
)

// fakeDaemon answers one connection: it reads the request line, sends it
// on the returned channel and writes reply(request) followed by newlines.
func fakeDaemon(t *testing.T, reply func(req map[string]json.RawMessage) []string) (string, <-chan map[string]json.RawMessage) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan map[string]json.RawMessage, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(conn).ReadBytes('\n')
		if err != nil {
			return
		}
		var req map[string]json.RawMessage
		json.Unmarshal(line, &req)
		got <- req
		for _, l := range reply(req) {
			conn.Write([]byte(l + "\n"))
		}
	}()
	return sock, got
}

func response(req map[string]json.RawMessage, result string) string {
	return `{"jsonrpc":"2.0","id":` + string(req["id"]) + `,"result":` + result + `,"daemon":{"version":"fake","pid":7}}`
}

func TestCallProgressDeliversNotificationsInOrder(t *testing.T) {
	sock, reqs := fakeDaemon(t, func(req map[string]json.RawMessage) []string {
		return []string{
			`{"jsonrpc":"2.0","method":"progress","params":{"phase":"pull","layer":1,"layers":2,"done":10,"total":100}}`,
			`{"jsonrpc":"2.0","method":"something.else","params":{"x":1}}`,
			`{"jsonrpc":"2.0","method":"progress","params":"not an object"}`,
			`{"jsonrpc":"2.0","method":"progress","params":{"phase":"mkfs","message":"writing ext4"}}`,
			response(req, `{"name":"deb","size_bytes":42}`),
		}
	})
	var got []api.Progress
	im, err := New(sock).BuildImage(context.Background(), api.ImageBuildParams{Name: "deb", From: "debian:bookworm"},
		func(p api.Progress) { got = append(got, p) })
	if err != nil {
		t.Fatal(err)
	}
	if im.Name != "deb" || im.SizeBytes != 42 {
		t.Fatalf("result: %+v", im)
	}
	want := []api.Progress{
		{Phase: "pull", Layer: 1, Layers: 2, Done: 10, Total: 100},
		{Phase: "mkfs", Message: "writing ext4"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("progress:\n got %+v\nwant %+v", got, want)
	}
	req := <-reqs
	if string(req["progress"]) != "true" || string(req["method"]) != `"image.build"` {
		t.Fatalf("request did not ask for progress: %v", req)
	}
	var params map[string]any
	json.Unmarshal(req["params"], &params)
	if _, ok := params["progress"]; ok || params["name"] != "deb" {
		t.Fatalf("progress leaked into params: %v", params)
	}
}

func TestCallSkipsNotificationsAndDoesNotAskForThem(t *testing.T) {
	sock, reqs := fakeDaemon(t, func(req map[string]json.RawMessage) []string {
		return []string{
			`{"jsonrpc":"2.0","method":"progress","params":{"phase":"pull"}}`,
			response(req, `{"text":"hi"}`),
		}
	})
	c := New(sock)
	var out struct{ Text string }
	if err := c.Call(context.Background(), "test.echo", map[string]string{"text": "hi"}, &out); err != nil || out.Text != "hi" {
		t.Fatalf("call: %+v, %v", out, err)
	}
	if _, asked := (<-reqs)["progress"]; asked {
		t.Fatal("Call asked for progress")
	}
	if c.LastDaemon().Version != "fake" {
		t.Fatalf("daemon info not kept: %+v", c.LastDaemon())
	}
}

// TestCallAsksForProgressWhenTheContextHasAReporter: a VM call whose
// context carries a reporter (as the CLI's and the TUI's do) asks for
// progress and gets the reports.
func TestCallAsksForProgressWhenTheContextHasAReporter(t *testing.T) {
	sock, reqs := fakeDaemon(t, func(req map[string]json.RawMessage) []string {
		return []string{
			`{"jsonrpc":"2.0","method":"progress","params":{"phase":"disk"}}`,
			`{"jsonrpc":"2.0","method":"progress","params":{"phase":"boot","message":"kernel booting"}}`,
			response(req, `{"name":"dev","state":"running"}`),
		}
	})
	var got []string
	ctx := progress.With(context.Background(), func(p api.Progress) { got = append(got, p.Phase) })
	vm, err := New(sock).CreateVM(ctx, api.VMCreateParams{Name: "dev"})
	if err != nil || vm.Name != "dev" {
		t.Fatalf("create: %+v, %v", vm, err)
	}
	if string((<-reqs)["progress"]) != "true" {
		t.Fatal("the call did not ask for progress")
	}
	if !reflect.DeepEqual(got, []string{"disk", "boot"}) {
		t.Fatalf("phases %q", got)
	}
}

func TestCallProgressErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(req map[string]json.RawMessage) []string
		want  string
	}{
		{"remote error after progress", func(req map[string]json.RawMessage) []string {
			return []string{
				`{"jsonrpc":"2.0","method":"progress","params":{"phase":"pull"}}`,
				`{"jsonrpc":"2.0","id":` + string(req["id"]) + `,"error":{"code":-32001,"message":"no such image"},"daemon":{}}`,
			}
		}, "no such image"},
		{"refused with a null id", func(map[string]json.RawMessage) []string {
			return []string{`{"jsonrpc":"2.0","id":null,"error":{"code":-32005,"message":"permission denied"},"daemon":{}}`}
		}, "permission denied"},
		{"another request's id", func(map[string]json.RawMessage) []string {
			return []string{`{"jsonrpc":"2.0","id":999999,"result":{},"daemon":{}}`}
		}, "response has id 999999"},
		{"garbage", func(map[string]json.RawMessage) []string { return []string{"hello"} }, "decode test.x response"},
		{"hang-up after progress", func(map[string]json.RawMessage) []string {
			return []string{`{"jsonrpc":"2.0","method":"progress","params":{"phase":"pull"}}`}
		}, "read test.x response"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock, _ := fakeDaemon(t, tc.reply)
			err := New(sock).CallProgress(context.Background(), "test.x", nil, nil, func(api.Progress) {})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestCallProgressCancel(t *testing.T) {
	sock, _ := fakeDaemon(t, func(map[string]json.RawMessage) []string {
		time.Sleep(time.Second) // a long call: nothing to read for a while
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := New(sock).CallProgress(ctx, "test.x", nil, nil, func(api.Progress) {}); err != context.DeadlineExceeded {
		t.Fatalf("got %v, want the context's error", err)
	}
}

// TestRawResult: a json.RawMessage result is the daemon's bytes as sent,
// and a malformed response is still refused.
func TestRawResult(t *testing.T) {
	const vms = `{"vms":[{"name":"a"},{"name":"b"}]}`
	sock, _ := fakeDaemon(t, func(req map[string]json.RawMessage) []string { return []string{response(req, vms)} })
	raw, err := New(sock).ListVMsJSON(context.Background())
	if err != nil || string(raw) != vms {
		t.Fatalf("raw result %s, %v; want %s", raw, err, vms)
	}
	sock, _ = fakeDaemon(t, func(req map[string]json.RawMessage) []string {
		return []string{`{"jsonrpc":"2.0","id":` + string(req["id"]) + `,"result":{"vms":[}`}
	})
	if _, err := New(sock).ListVMsJSON(context.Background()); err == nil {
		t.Fatal("a malformed response was taken")
	}
}

// TestSplitResponse: a response in the daemon's order is split without
// decoding its result, and gives what a full decode gives; anything else
// is left to the full decode.
func TestSplitResponse(t *testing.T) {
	daemonFirst := `{"jsonrpc":"2.0","id":7,"daemon":{"version":"v1","pid":3,"executable":"/b","executable_id":"1-2"},"result":{"vms":[{"name":"a","n":{"x":"}"}}]}}` + "\n"
	m, ok := splitResponse([]byte(daemonFirst))
	if !ok || string(m.Result) != `{"vms":[{"name":"a","n":{"x":"}"}}]}` || string(m.ID) != "7" || m.Daemon.Version != "v1" || m.JSONRPC != "2.0" {
		t.Fatalf("split: %v %+v result %s", ok, m, m.Result)
	}
	var full incoming
	if err := json.Unmarshal([]byte(daemonFirst), &full); err != nil || !reflect.DeepEqual(full, m) {
		t.Errorf("split %+v differs from the full decode %+v (%v)", m, full, err)
	}
	for _, line := range []string{
		`{"jsonrpc":"2.0","id":7,"result":[1],"daemon":{"version":"v1"}}`,                          // result before daemon
		`{"jsonrpc":"2.0","id":7,"daemon":{"version":"v1"},"error":{"code":-32001,"message":"x"}}`, // an error
		`{"jsonrpc":"2.0","method":"progress","params":{"phase":"x"}}`,                             // a notification
		`{"jsonrpc":"2.0","id":7,"daemon":{"version":"v1"},"result":[1],"extra":1`,                 // no closing brace
		`not json`,
	} {
		if _, ok := splitResponse([]byte(line)); ok {
			t.Errorf("split %s", line)
		}
	}
	// Those still decode (or fail) in full.
	if m, err := decodeLine([]byte(`{"jsonrpc":"2.0","id":7,"daemon":{"version":"v1"},"error":{"code":-32001,"message":"x"}}`)); err != nil || m.Error == nil || m.Error.Message != "x" {
		t.Errorf("error response: %+v, %v", m, err)
	}
}
