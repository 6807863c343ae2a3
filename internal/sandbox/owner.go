package sandbox

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A daemon names the processes of its sandboxes with an owner token (their
// argv[1]), so that the next daemon finds what an earlier one left running
// (KillOwned) without touching another daemon's.
var (
	ownerMu sync.Mutex
	owner   string
)

// SetOwner sets the owner token of every sandbox this process starts from
// now on: a short word (letters, digits, '-' and '_') that identifies the
// daemon, for example a hash of its state folder.
func SetOwner(token string) error {
	if token == "" || len(token) > 64 || strings.Trim(token, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
		return fmt.Errorf("sandbox owner %q: use up to 64 letters, digits, - and _", token)
	}
	ownerMu.Lock()
	owner = token
	ownerMu.Unlock()
	return nil
}

func currentOwner() string {
	ownerMu.Lock()
	defer ownerMu.Unlock()
	return owner
}

// KillOwned kills every process of the sandboxes (and guarded commands)
// that token's owner started, and waits until they are gone (at most
// timeout). A daemon calls it at start, before removing what an earlier
// daemon's builds left: their processes die with that daemon, but maybe
// not yet. It returns how many it found, and an error naming those still
// there.
func KillOwned(token string, timeout time.Duration) (int, error) {
	if token == "" {
		return 0, errors.New("sandbox: KillOwned needs an owner token")
	}
	deadline := time.Now().Add(timeout)
	seen := map[int]bool{}
	for {
		pids := ownedBy(token)
		if len(pids) == 0 {
			return len(seen), nil
		}
		for _, pid := range pids {
			seen[pid] = true
			// A guard stage cleans up after its command on SIGTERM; the
			// others (and a guard that does not go) get SIGKILL.
			syscall.Kill(pid, syscall.SIGTERM)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			return len(seen), fmt.Errorf("sandbox processes %v of an earlier daemon do not go away", pids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ownedBy lists the live (not zombie) processes whose argv is a sandbox
// stage's with token as argv[1].
func ownedBy(token string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) < 2 || !strings.HasPrefix(args[0], procName+"-") || args[1] != token {
			continue
		}
		if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
			s := string(st)
			if i := strings.LastIndexByte(s, ')'); i > 0 && strings.HasPrefix(s[i+1:], " Z") {
				continue
			}
		}
		pids = append(pids, pid)
	}
	return pids
}
