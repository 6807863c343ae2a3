package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
)

// DefaultAPITimeout bounds one API call when the Client is given none.
const DefaultAPITimeout = 5 * time.Second

// maxResponse bounds how much of a response body the client reads.
const maxResponse = 1 << 20

// Client talks to one Firecracker API socket: HTTP/1.1 over a Unix socket,
// JSON bodies. Every call is bounded by the client's timeout as well as by
// its context. It opens a fresh connection per call (Firecracker's server
// handles few connections, and a pooled one would outlive a restarted
// Firecracker on the same path). It is safe for concurrent use.
type Client struct {
	socket  string
	timeout time.Duration
	hc      *http.Client
}

// NewClient returns a client for the API socket at socketPath; timeout
// bounds each call (DefaultAPITimeout when <= 0). It does not connect.
func NewClient(socketPath string, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = DefaultAPITimeout
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		DisableKeepAlives:  true,
		DisableCompression: true,
	}
	return &Client{socket: socketPath, timeout: timeout, hc: &http.Client{Transport: tr}}
}

// Socket returns the API socket path the client talks to.
func (c *Client) Socket() string { return c.socket }

// APIError is the error of a call Firecracker answered with a status other
// than 2xx. FaultMessage is Firecracker's explanation (the fault_message of
// its error body), or the raw body when it was not one.
type APIError struct {
	Method       string
	Path         string
	StatusCode   int
	FaultMessage string
}

// Error reads like "PUT /boot-source: 400 Bad Request: <fault message>".
func (e *APIError) Error() string {
	msg := e.FaultMessage
	if msg == "" {
		msg = "(no fault message)"
	}
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode), msg)
}

// Put sends body as JSON with PUT to path and returns nil when Firecracker
// answers 2xx (it answers 204), an *APIError for any other status, and a
// transport error (wrapping context.DeadlineExceeded on timeout) when there
// is no answer.
func (c *Client) Put(ctx context.Context, path string, body any) error {
	return c.do(ctx, http.MethodPut, path, body, nil)
}

// Patch is Put with the PATCH method.
func (c *Client) Patch(ctx context.Context, path string, body any) error {
	return c.do(ctx, http.MethodPatch, path, body, nil)
}

// Get sends GET path and decodes the JSON answer into out (which may be
// nil). Errors are as for Put.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

// InstanceInfo returns GET /: the instance id, its state ("Not started",
// "Running" or "Paused"), the VMM version and the application name.
func (c *Client) InstanceInfo(ctx context.Context) (fcapi.InstanceInfo, error) {
	var info fcapi.InstanceInfo
	err := c.Get(ctx, "/", &info)
	return info, err
}

// Version returns the Firecracker version from GET /version, e.g. "1.16.1".
func (c *Client) Version(ctx context.Context) (string, error) {
	var v fcapi.FirecrackerVersion
	if err := c.Get(ctx, "/version", &v); err != nil {
		return "", err
	}
	return v.FirecrackerVersion, nil
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: encode body: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// url.Error repeats the fake URL; say which socket instead.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return fmt.Errorf("%s %s on %s: %w", method, path, c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &APIError{Method: method, Path: path, StatusCode: resp.StatusCode, FaultMessage: faultMessage(data)}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode response %q: %w", method, path, truncate(data, 200), err)
		}
	}
	return nil
}

func faultMessage(body []byte) string {
	var e fcapi.Error
	if json.Unmarshal(body, &e) == nil && e.FaultMessage != "" {
		return e.FaultMessage
	}
	return strings.TrimSpace(string(truncate(body, 1000)))
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
