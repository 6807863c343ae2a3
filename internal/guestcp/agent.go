package guestcp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/bangerhq/banger/internal/agent"
)

// HandleOut is the guest agent's handler for OpOut: it sends the path as
// a tar stream.
func HandleOut(ctx context.Context, st *agent.Stream) error {
	var p OutParams
	if err := st.Decode(&p); err != nil {
		return err
	}
	if !filepath.IsAbs(p.Path) {
		return agent.Errorf(agent.CodeInvalid, "%q is not an absolute path in the guest", p.Path)
	}
	dir, total, err := Inspect(p.Path, p.Recursive)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return agent.Errorf(agent.CodeNotFound, "no such file or directory in the guest: %s", p.Path)
	case errors.Is(err, ErrIsDir):
		return agent.Errorf(agent.CodeInvalid, "%s is a directory in the guest: copy it with -r", p.Path)
	case err != nil:
		return err
	}
	if err := st.Accept(OutResult{Dir: dir, Bytes: total}); err != nil {
		return err
	}
	_, err = Send(st, p.Path, p.Recursive, nil)
	return err
}

// HandleIn is the guest agent's handler for OpIn: it extracts the host's
// tar stream at the target (see Target) and answers with an InResult.
func HandleIn(ctx context.Context, st *agent.Stream) error {
	var p InParams
	if err := st.Decode(&p); err != nil {
		return err
	}
	if !filepath.IsAbs(p.Dest) {
		return agent.Errorf(agent.CodeInvalid, "%q is not an absolute path in the guest", p.Dest)
	}
	parent, base, err := Target(p.Dest, p.Name, p.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return agent.Errorf(agent.CodeNotFound, "in the guest: %v", err)
	}
	if err != nil {
		return agent.Errorf(agent.CodeInvalid, "in the guest: %v", err)
	}
	if err := st.Accept(nil); err != nil {
		return err
	}
	stats, err := Extract(st, parent, base, ExtractOptions{KeepSpecialBits: true})
	res := InResult{OK: err == nil, Target: filepath.Join(parent, base), Files: stats.Files, Bytes: stats.Bytes}
	if err != nil {
		res.Error = "in the guest: " + err.Error()
	}
	b, _ := json.Marshal(res)
	_, werr := st.Write(append(b, '\n'))
	if err == nil {
		err = werr
	}
	return err
}

// Pull writes what an accepted OpOut stream (rw, with its result res)
// carries to dest on this machine, as cp -r would (see Target); name is
// the base name of the guest path. The host side never keeps setuid,
// setgid or sticky bits from a guest.
func Pull(r io.Reader, res OutResult, dest, name string, progress func(int64)) (Stats, error) {
	parent, base, err := Target(dest, name, res.Dir)
	if err != nil {
		return Stats{}, err
	}
	st, err := Extract(r, parent, base, ExtractOptions{Progress: progress})
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("%w: the guest stopped sending (see its agent's log: journalctl -u banger-vsock-pingd)", err)
	}
	return st, err
}

// writeCloser is a stream whose direction to the guest can be ended.
type writeCloser interface {
	io.ReadWriter
	CloseWrite() error
}

// Push sends src to an accepted OpIn stream and returns the guest's
// answer. The answer is read while sending, so a guest that fails early
// stops the copy at once.
func Push(rw writeCloser, src string, recursive bool, progress func(int64)) (InResult, error) {
	resc := make(chan error, 1)
	var res InResult
	go func() {
		line, err := bufio.NewReader(rw).ReadBytes('\n')
		if err != nil {
			resc <- fmt.Errorf("the guest did not confirm the copy: %w", err)
			return
		}
		if err := json.Unmarshal(line, &res); err != nil {
			resc <- fmt.Errorf("the guest's answer: %w", err)
			return
		}
		if !res.OK {
			resc <- errors.New(res.Error)
			return
		}
		resc <- nil
	}()
	sent := make(chan error, 1)
	go func() {
		_, err := Send(rw, src, recursive, progress)
		if err == nil {
			err = rw.CloseWrite()
		}
		sent <- err
	}()
	select {
	case err := <-resc:
		// The guest answered before the end of the stream only when it
		// failed; after the end, it confirms.
		if err != nil {
			return res, err
		}
		if serr := <-sent; serr != nil {
			return res, serr
		}
		return res, nil
	case serr := <-sent:
		if serr == nil {
			return res, <-resc
		}
		// The stream broke while sending: the guest's answer, when it
		// gave one, says why better than the broken pipe.
		select {
		case err := <-resc:
			if err != nil {
				return res, err
			}
		case <-time.After(time.Second):
		}
		return res, serr
	}
}
