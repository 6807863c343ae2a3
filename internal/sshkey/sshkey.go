// Package sshkey makes the SSH keys banger needs, in Go: the daemon's key
// (its identity in every guest) and each VM's host key. Keys are ed25519,
// written in OpenSSH's own formats, which both OpenSSH's ssh and sshd read.
package sshkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/bangerhq/banger/internal/atomicfile"
)

// Pair is an ed25519 key pair in OpenSSH's formats.
type Pair struct {
	// Private is the private key as OpenSSH writes it (an unencrypted
	// "OPENSSH PRIVATE KEY" PEM block, with the comment inside).
	Private []byte
	// Key is the public key as "ssh-ed25519 BASE64", the form of
	// known_hosts and authorized_keys lines, without a comment.
	Key string
	// Comment names the key ("root@dev"); it ends the .pub line.
	Comment string
}

// PublicLine is the public key as a .pub file or authorized_keys holds it:
// "ssh-ed25519 BASE64 COMMENT", without a newline.
func (p Pair) PublicLine() string {
	if p.Comment == "" {
		return p.Key
	}
	return p.Key + " " + p.Comment
}

// New makes a fresh ed25519 key pair named by comment.
func New(comment string) (Pair, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Pair{}, fmt.Errorf("generate ed25519 key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return Pair{}, fmt.Errorf("encode ed25519 key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return Pair{}, fmt.Errorf("encode ed25519 public key: %w", err)
	}
	return Pair{Private: pem.EncodeToMemory(block), Key: authorizedKey(sshPub), Comment: comment}, nil
}

func authorizedKey(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// Ensure returns the public line of the key at path (an OpenSSH private key
// file), first making the key, named comment, when there is none: the
// private key goes to path (mode 0600) and its public line to path+".pub"
// (0644), each written atomically; missing folders are made with mode
// 0700. An existing key is read, never replaced: its public half comes
// from the private key (the .pub file is rewritten when missing), so a key
// made by ssh-keygen before works too. A file at path that is not an
// unencrypted OpenSSH-readable private key is an error.
func Ensure(path, comment string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return create(path, comment)
	}
	if err != nil {
		return "", fmt.Errorf("read ssh key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return "", fmt.Errorf("ssh key %s: %w (remove it to have a new one made)", path, err)
	}
	line := authorizedKey(signer.PublicKey())
	if old, err := os.ReadFile(path + ".pub"); err == nil {
		// Keep the comment the file has, when it is this key's line.
		if f := strings.Fields(string(old)); len(f) >= 2 && f[0]+" "+f[1] == line {
			return strings.TrimSpace(string(old)), nil
		}
	}
	if err := atomicfile.WriteFile(path+".pub", []byte(line+"\n"), 0o644); err != nil {
		return "", err
	}
	return line, nil
}

func create(path, comment string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("make ssh key folder: %w", err)
	}
	p, err := New(comment)
	if err != nil {
		return "", err
	}
	// The public half first: a crash in between leaves no private key, so
	// the next start makes a new pair (rather than a key without .pub,
	// which Ensure would repair anyway).
	if err := atomicfile.WriteFile(path+".pub", []byte(p.PublicLine()+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := atomicfile.WriteFile(path, p.Private, 0o600); err != nil {
		return "", err
	}
	return p.PublicLine(), nil
}
