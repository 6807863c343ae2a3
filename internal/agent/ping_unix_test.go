package agent

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkPingUnix measures one ping round trip over a Unix socket, the
// host side of both transports.
func BenchmarkPingUnix(b *testing.B) {
	path := filepath.Join(b.TempDir(), "a.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		Serve(context.Background(), c, ProcInfo("bench"))
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var total time.Duration
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, rtt, err := Ping(ctx, c)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		total += rtt
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "rtt-µs/op")
}
