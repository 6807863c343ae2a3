package vmm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync"
)

// sums caches FileSum by path, size and modification time: a VMM binary
// and a kernel are hashed once per daemon.
var sums struct {
	sync.Mutex
	m map[string]string
}

// FileSum is the hex SHA-256 of the file at p, for a Snapshotter's
// MachineKey.
func FileSum(p string) (string, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return "", err
	}
	id := fmt.Sprintf("%s\x00%d\x00%d", p, fi.Size(), fi.ModTime().UnixNano())
	sums.Lock()
	sum, ok := sums.m[id]
	sums.Unlock()
	if ok {
		return sum, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	sum = hex.EncodeToString(h.Sum(nil))
	sums.Lock()
	if sums.m == nil {
		sums.m = map[string]string{}
	}
	sums.m[id] = sum
	sums.Unlock()
	return sum, nil
}

// WriteFileSums writes the FileSum of each path that is not "" to w, one
// per line, in order: the files part of a Snapshotter's MachineKey.
func WriteFileSums(w io.Writer, paths ...string) error {
	for _, p := range paths {
		if p == "" {
			continue
		}
		sum, err := FileSum(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\n", sum)
	}
	return nil
}
