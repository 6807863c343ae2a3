package oci

import (
	"context"
	"encoding/base64"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestOpenUsesDockerConfigCredentials checks that the default keychain, the
// user's Docker config, authenticates pulls.
func TestOpenUsesDockerConfigCredentials(t *testing.T) {
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "dev" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	ref := host + "/private/img:v1"
	img := testImage(t, "amd64")
	if err := remote.Write(mustRef(t, ref), img, remote.WithAuth(&authn.Basic{Username: "dev", Password: "s3cret"})); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	src := Source{Kind: Registry, Ref: ref}
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	if _, _, err := Open(ctx, src, Options{}); err == nil || !strings.Contains(err.Error(), "docker login "+host) {
		t.Fatalf("without credentials: err = %v, want a docker login hint", err)
	} else {
		t.Log(err)
	}

	cfg := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("dev:s3cret"))
	if err := os.WriteFile(filepath.Join(cfg, "config.json"),
		[]byte(`{"auths":{"`+host+`":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", cfg)
	got, digest, err := Open(ctx, src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := img.Digest(); digest != want.String() {
		t.Errorf("digest %s, want %s", digest, want)
	}
	if err := Flatten(got, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
}
