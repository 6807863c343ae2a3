package subid

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, subuid, subgid, passwd, group string) Files {
	t.Helper()
	dir := t.TempDir()
	f := Files{
		SubUID: filepath.Join(dir, "subuid"), SubGID: filepath.Join(dir, "subgid"),
		Passwd: filepath.Join(dir, "passwd"), Group: filepath.Join(dir, "group"),
	}
	for p, s := range map[string]string{f.SubUID: subuid, f.SubGID: subgid, f.Passwd: passwd, f.Group: group} {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

const accounts = "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n"

func TestLookup(t *testing.T) {
	tests := []struct {
		name           string
		subuid, subgid string
		passwd         string
		user           string
		uid            int
		want           IDs
		wantErr        string
	}{
		{name: "user", subuid: "alice:100000:65536\n", subgid: "alice:100000:65536\n", user: "alice", uid: 1000,
			want: IDs{UIDs: Range{100000, 65536}, GIDs: Range{100000, 65536}}},
		{name: "user by number, larger range trimmed", subuid: "1000:100000:200000\n", subgid: "alice:300000:65536\n", user: "alice", uid: 1000,
			want: IDs{UIDs: Range{100000, 65536}, GIDs: Range{300000, 65536}}},
		{name: "first long enough entry", subuid: "alice:100000:100\nalice:200000:65536\n", subgid: "alice:100000:65536\n", user: "alice", uid: 1000,
			want: IDs{UIDs: Range{200000, 65536}, GIDs: Range{100000, 65536}}},
		{name: "root needs vmm slots", subuid: "root:2147483648:131072\n", subgid: "root:2147483648:131072\n", user: "root", uid: 0,
			want: IDs{UIDs: Range{2147483648, 131072}, GIDs: Range{2147483648, 131072}, Root: true}},
		{name: "root range too short", subuid: "root:100000:65536\n", subgid: "root:100000:131072\n", user: "root", uid: 0,
			wantErr: "gives root no range of 131072 ids"},
		{name: "no entry", subuid: "bob:100000:65536\n", subgid: "alice:100000:65536\n", user: "alice", uid: 1000,
			wantErr: "has no entry for alice"},
		{name: "overlaps an account", subuid: "alice:900:65536\n", subgid: "alice:100000:65536\n", user: "alice", uid: 1000,
			wantErr: `overlaps account "alice" (id 1000)`},
		{name: "overlaps another user", subuid: "alice:100000:65536\nbob:160000:65536\n", subgid: "alice:100000:65536\n", user: "alice", uid: 1000,
			wantErr: "overlaps the range 160000-225535 of bob"},
		{name: "starts at 0", subuid: "alice:0:65536\n", subgid: "alice:100000:65536\n", user: "alice", uid: 1000,
			wantErr: "starts at id 0"},
		{name: "malformed", subuid: "alice:x:65536\n", subgid: "alice:100000:65536\n", user: "alice", uid: 1000,
			wantErr: "line 1: start and count must be numbers"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := writeFiles(t, tc.subuid, tc.subgid, accounts, accounts)
			got, err := Lookup(f, tc.user, tc.uid)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), "usermod --add-subuids") {
					t.Fatalf("err = %v: does not say how to fix it", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestVMMIDs(t *testing.T) {
	ids := IDs{UIDs: Range{2147483648, 131072}, GIDs: Range{3000000000, 131072}, Root: true}
	uid, gid, err := ids.VMM(5)
	if err != nil || uid != 2147483648+65536+5 || gid != 3000000000+65536+5 {
		t.Fatalf("VMM(5) = %d, %d, %v", uid, gid, err)
	}
	if _, _, err := ids.VMM(VMMSlots); err == nil {
		t.Fatal("slot past the range accepted")
	}
	if _, _, err := (IDs{UIDs: Range{100000, 65536}}).VMM(0); err == nil {
		t.Fatal("vmm ids given to a non-root daemon")
	}
	if ids.SandboxUID() != 2147483648 || ids.SandboxGID() != 3000000000 {
		t.Fatal("sandbox ids")
	}
}

func TestFixCommand(t *testing.T) {
	if got := FixCommand("root", 0); got != "usermod --add-subuids 2147483648-2147614719 --add-subgids 2147483648-2147614719 root" {
		t.Fatal(got)
	}
	if got := FixCommand("", 1000); got != "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 1000" {
		t.Fatal(got)
	}
}
