package testhost

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// InNetns runs fn on a locked OS thread inside the network namespace ns
// and returns fn's error; sockets fn creates belong to ns. The thread goes
// back to its own namespace before it is unlocked, so no thread of the
// test process stays in ns: were it the main thread (which Go never ends),
// the process would count among the namespace's processes (`ip netns
// pids`), and a cleanup that kills those would kill the test. A thread
// that cannot go back stays locked and ends with its goroutine.
func InNetns(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open this thread's network namespace: %w", err)
			return
		}
		defer own.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread() // not entered
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		ferr := fn()
		if netns.Set(own) == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// InNamedNetns is InNetns for a namespace named by `ip netns add NAME`.
func InNamedNetns(name string, fn func() error) error {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", name, err)
	}
	defer ns.Close()
	if err := InNetns(ns, fn); err != nil {
		return fmt.Errorf("in network namespace %s: %w", name, err)
	}
	return nil
}

// NewNetns creates a network namespace (it needs root), closed, and so
// destroyed with its devices and nftables state, when t ends. No thread of
// the test process stays in it.
func NewNetns(t testing.TB) netns.NsHandle {
	t.Helper()
	NeedRoot(t, "to create a network namespace")
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		own, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer own.Close()
		ns, err := netns.New() // creates it and moves this thread into it
		if netns.Set(own) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{ns, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("create a network namespace: %v", r.err)
	}
	t.Cleanup(func() { r.ns.Close() })
	return r.ns
}
