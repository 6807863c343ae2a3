package cli

import "testing"

func TestParseCopyArg(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want copyArg
	}{
		{"dev:/etc/hosts", copyArg{vm: "dev", path: "/etc/hosts"}},
		{"dev:notes.txt", copyArg{vm: "dev", path: "/root/notes.txt"}},
		{"dev:", copyArg{vm: "dev", path: "/root"}},
		{"./a:b", copyArg{path: "./a:b"}},
		{"/tmp/x:y", copyArg{path: "/tmp/x:y"}},
		{":x", copyArg{path: ":x"}},
		{"plain", copyArg{path: "plain"}},
	} {
		if got := parseCopyArg(tc.in); got != tc.want {
			t.Errorf("parseCopyArg(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
