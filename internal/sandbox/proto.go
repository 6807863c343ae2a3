package sandbox

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// The stages of a sandbox are this same binary, run again (/proc/self/exe)
// with stageEnv naming the stage. Each stage reads its configuration as one
// JSON line on fd 3 (the pipe then stays open: the parent holds it while it
// lives) and writes messages, one JSON object a line, on fd 4.
const (
	stageEnv = "BANGER_SANDBOX_STAGE"
	cfgFD    = 3
	msgFD    = 4
	// procName is argv[0] of every stage, so ps shows what they are.
	procName = "banger-sandbox"
)

// message is one line on a stage's message pipe.
type message struct {
	// PID is the sandbox init's pid, sent by the setup stage.
	PID int `json:"pid,omitempty"`
	// Event is a progress report of the job (Sandbox.Event).
	Event json.RawMessage `json:"event,omitempty"`
	// Done ends the stream: the stage's Result, or its Error.
	Done   bool            `json:"done,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// msgWriter writes messages; safe for concurrent use.
type msgWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (m *msgWriter) send(msg message) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, err = m.w.Write(append(b, '\n'))
	return err
}

// done sends the final message for result and err.
func (m *msgWriter) done(result any, err error) error {
	if err != nil {
		return m.send(message{Done: true, Error: err.Error()})
	}
	b, merr := json.Marshal(result)
	if merr != nil {
		return m.send(message{Done: true, Error: "encode result: " + merr.Error()})
	}
	return m.send(message{Done: true, Result: b})
}

// readMessages calls each for every message read from r until EOF. It
// returns the final message (Done), or an error when the stream ended
// without one.
func readMessages(r io.Reader, each func(message) error) (message, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var m message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return message{}, fmt.Errorf("sandbox message %.100q: %w", sc.Text(), err)
		}
		if m.Done {
			_, _ = io.Copy(io.Discard, r)
			return m, nil
		}
		if err := each(m); err != nil {
			return message{}, err
		}
	}
	if err := sc.Err(); err != nil {
		return message{}, err
	}
	return message{}, errNoResult
}

var errNoResult = errors.New("the sandbox ended without a result")

// readLine reads one line from f a byte at a time (so nothing after it is
// consumed: the rest of the pipe is the lifeline).
func readLine(f *os.File) (string, error) {
	var sb strings.Builder
	b := make([]byte, 1)
	for {
		n, err := f.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				return sb.String(), nil
			}
			sb.WriteByte(b[0])
			if sb.Len() > 16<<20 {
				return "", errors.New("configuration line too long")
			}
			continue
		}
		if err == io.EOF {
			return "", errors.New("the parent closed the configuration pipe: it is gone")
		}
		if err != nil {
			return "", err
		}
	}
}

// readConfig reads one JSON line from f into v.
func readConfig(f *os.File, v any) error {
	line, err := readLine(f)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(line), v)
}

func writeLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// Job is the code a sandbox runs: it gets the sandbox and the argument
// given to Run, and returns the result (sent back as JSON) or an error
// (whose message is what Run returns).
type Job func(sb *Sandbox, arg json.RawMessage) (any, error)

// TreeFunc is Go code run inside a tree (Sandbox.InTree): after pivot_root
// every path it opens resolves inside the tree. stdin is the run's stdin;
// log receives lines for the sandbox's log.
type TreeFunc func(arg json.RawMessage, stdin io.Reader, log io.Writer) (any, error)

var (
	regMu     sync.Mutex
	jobs      = map[string]Job{}
	treeFuncs = map[string]TreeFunc{}
)

// RegisterJob makes fn runnable as Spec.Job. Call it from an init function
// of the package that owns the job (so the re-executed binary has it); a
// duplicate name panics.
func RegisterJob(name string, fn Job) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := jobs[name]; dup {
		panic("sandbox: job " + name + " registered twice")
	}
	jobs[name] = fn
}

// RegisterTreeFunc makes fn runnable as TreeSpec.Func; as RegisterJob.
func RegisterTreeFunc(name string, fn TreeFunc) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := treeFuncs[name]; dup {
		panic("sandbox: tree function " + name + " registered twice")
	}
	treeFuncs[name] = fn
}

func lookupJob(name string) (Job, bool) {
	regMu.Lock()
	defer regMu.Unlock()
	j, ok := jobs[name]
	return j, ok
}

func lookupTreeFunc(name string) (TreeFunc, bool) {
	regMu.Lock()
	defer regMu.Unlock()
	f, ok := treeFuncs[name]
	return f, ok
}
