package scripts

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
)

// Digest is the SHA-256 of every embedded file (names and contents, in walk
// order): it changes whenever the customisation an image gets changes, so
// the image build cache keys on it.
func Digest() string {
	h := sha256.New()
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		panic(fmt.Sprintf("scripts: walk embedded files: %v", err)) // cannot fail for an embed.FS
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
