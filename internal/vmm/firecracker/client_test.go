package firecracker

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcsim"
	"github.com/bangerhq/banger/internal/vmm/firecracker/vmlinux"
)

// shortDir returns a fresh folder with a short path: t.TempDir() paths
// grow with the test name and Unix socket paths must stay under 108 bytes.
func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "fc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// startSim serves an in-process simulator in a fresh folder and returns it
// with its API socket path.
func startSim(t *testing.T) (*fcsim.Server, string) {
	t.Helper()
	dir := shortDir(t)
	sock := filepath.Join(dir, "api.sock")
	guest := &fcsim.FakeGuest{}
	guest.Handle(fcsim.EchoPort, fcsim.Echo)
	guest.Handle(fcsim.GreetPort, fcsim.Greet)
	srv, err := fcsim.New(fcsim.Options{APISock: sock, ID: "client-test", Spec: loadSpec(t), Guest: guest})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	return srv, sock
}

// silentSocket accepts connections and never answers.
func silentSocket(t *testing.T) string {
	p := filepath.Join(shortDir(t), "silent.sock")
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return p
}

func TestClient(t *testing.T) {
	_, sock := startSim(t)
	c := NewClient(sock, time.Second)
	ctx := context.Background()

	info, err := c.InstanceInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != "client-test" || info.State != fcapi.StateNotStarted || info.AppName != "Firecracker" || info.VMMVersion != "1.16.1" {
		t.Errorf("InstanceInfo = %+v", info)
	}
	if v, err := c.Version(ctx); err != nil || v != "1.16.1" {
		t.Errorf("Version = %q, %v", v, err)
	}
	if err := c.Put(ctx, "/machine-config", fcapi.MachineConfiguration{VcpuCount: 2, MemSizeMib: 256}); err != nil {
		t.Errorf("204 answer: %v", err)
	}
	var mc fcapi.MachineConfiguration
	if err := c.Get(ctx, "/machine-config", &mc); err != nil || mc.VcpuCount != 2 {
		t.Errorf("GET /machine-config = %+v, %v", mc, err)
	}

	err = c.Put(ctx, "/boot-source", fcapi.BootSource{KernelImagePath: "/nonexistent/vmlinux"})
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("400 answer: %v, want *APIError", err)
	}
	if ae.StatusCode != 400 || ae.Method != "PUT" || ae.Path != "/boot-source" || !strings.Contains(ae.FaultMessage, "The kernel file cannot be opened") {
		t.Errorf("APIError = %+v", ae)
	}
	if want := "PUT /boot-source: 400 Bad Request: Boot source error: The kernel file cannot be opened"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q, want prefix %q", err, want)
	}
	err = c.Patch(ctx, "/vm", fcapi.VM{State: fcapi.VMPaused})
	if !errors.As(err, &ae) || !strings.Contains(ae.FaultMessage, "before starting") {
		t.Errorf("PATCH before boot: %v", err)
	}
}

func TestClientErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("timeout", func(t *testing.T) {
		c := NewClient(silentSocket(t), 200*time.Millisecond)
		t0 := time.Now()
		err := c.Put(ctx, "/actions", Action(fcapi.ActionInstanceStart))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
		if time.Since(t0) > 2*time.Second {
			t.Errorf("timeout took %v", time.Since(t0))
		}
		t.Logf("%v", err)
	})
	t.Run("no socket", func(t *testing.T) {
		p := filepath.Join(shortDir(t), "none.sock")
		_, err := NewClient(p, time.Second).InstanceInfo(ctx)
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Fatalf("err = %v, want one naming %s", err, p)
		}
	})
	t.Run("non-json error body", func(t *testing.T) {
		p := filepath.Join(shortDir(t), "plain.sock")
		l, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			for {
				line, err := br.ReadString('\n')
				if err != nil || line == "\r\n" {
					break
				}
			}
			io.WriteString(c, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\nConnection: close\r\n\r\noops!")
		}()
		err = NewClient(p, time.Second).Get(ctx, "/", nil)
		var ae *APIError
		if !errors.As(err, &ae) || ae.StatusCode != 500 || ae.FaultMessage != "oops!" {
			t.Fatalf("err = %#v", err)
		}
	})
}

func TestDialVsock(t *testing.T) {
	_, sock := startSim(t)
	dir := filepath.Dir(sock)
	c := NewClient(sock, time.Second)
	ctx := context.Background()
	kernel := filepath.Join(dir, "vmlinux")
	os.WriteFile(kernel, vmlinux.Minimal(true), 0o600)
	uds := filepath.Join(dir, "v.sock")
	for _, r := range []struct {
		path string
		body any
	}{
		{"/boot-source", fcapi.BootSource{KernelImagePath: kernel}},
		{"/vsock", fcapi.Vsock{GuestCID: 3, UDSPath: uds}},
		{"/actions", Action(fcapi.ActionInstanceStart)},
	} {
		if err := c.Put(ctx, r.path, r.body); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("echo", func(t *testing.T) {
		t0 := time.Now()
		conn, err := DialVsock(ctx, uds, fcsim.EchoPort)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		t.Logf("dial + handshake: %v", time.Since(t0))
		io.WriteString(conn, "ping\n")
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil || line != "ping\n" {
			t.Fatalf("echo = %q, %v", line, err)
		}
	})
	t.Run("guest speaks first", func(t *testing.T) {
		// The greeting follows OK at once; a handshake that read ahead
		// would swallow it.
		for range 20 {
			conn, err := DialVsock(ctx, uds, fcsim.GreetPort)
			if err != nil {
				t.Fatal(err)
			}
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			line, err := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if err != nil || line != fcsim.Greeting {
				t.Fatalf("greeting = %q, %v", line, err)
			}
		}
	})
	t.Run("nothing listens", func(t *testing.T) {
		_, err := DialVsock(ctx, uds, 9999)
		if !errors.Is(err, ErrVsockRefused) || !strings.Contains(err.Error(), "port 9999") {
			t.Fatalf("err = %v, want ErrVsockRefused naming the port", err)
		}
		t.Logf("%v", err)
	})
	t.Run("no answer", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, err := DialVsock(ctx, silentSocket(t), 1)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
		t.Logf("%v", err)
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(100*time.Millisecond, cancel)
		_, err := DialVsock(ctx, silentSocket(t), 1)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want Canceled", err)
		}
	})
	t.Run("no socket", func(t *testing.T) {
		_, err := DialVsock(ctx, filepath.Join(dir, "none.sock"), 1)
		if err == nil || !strings.Contains(err.Error(), "none.sock") {
			t.Fatalf("err = %v", err)
		}
	})
}
