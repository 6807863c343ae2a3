package doctor

import (
	"encoding/binary"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/bangerhq/banger/internal/testhost"
)

func TestTUN(t *testing.T) {
	f := newFixture(t)
	r := f.run(t, IDTUN)
	wantStatus(t, r, StatusFail)
	wantContains(t, "detail", r.Detail, f.env.DevTUN+" does not exist")
	wantContains(t, "fix", r.Fix, "sudo modprobe tun")

	writeFile(t, f.env.DevTUN, "", 0o666)
	r = f.run(t, IDTUN)
	wantStatus(t, r, StatusFail)
	wantContains(t, "detail", r.Detail, "not a character device")

	f.env.DevTUN = "/dev/null" // an openable character device standing in for /dev/net/tun
	wantStatus(t, f.run(t, IDTUN), StatusOK)
}

func TestNetAdmin(t *testing.T) {
	t.Run("root with the capability", func(t *testing.T) {
		f := newFixture(t)
		f.setCaps(t, "000001fffeffffff") // what root has on this machine
		r := f.run(t, IDNetAdmin)
		wantStatus(t, r, StatusOK)
		wantContains(t, "detail", r.Detail, "root")
	})
	t.Run("root without it", func(t *testing.T) {
		f := newFixture(t)
		f.setCaps(t, "000001fffeffefff") // everything but bit 12
		r := f.run(t, IDNetAdmin)
		wantStatus(t, r, StatusFail)
		wantContains(t, "fix", r.Fix, "NET_ADMIN")
	})
	t.Run("user, bangerd not found", func(t *testing.T) {
		f := newFixture(t)
		f.env.EUID, f.env.User = 1000, "dev"
		r := f.run(t, IDNetAdmin)
		wantStatus(t, r, StatusFail)
		wantContains(t, "fix", r.Fix, "sudo setcap cap_net_admin+ep $(command -v bangerd)")
	})
	t.Run("user, bangerd without file capability", func(t *testing.T) {
		f := newFixture(t)
		f.env.EUID, f.env.User = 1000, "dev"
		f.env.Bangerd = writeScript(t, filepath.Join(f.bin, "bangerd"), "exit 0")
		r := f.run(t, IDNetAdmin)
		wantStatus(t, r, StatusFail)
		wantContains(t, "detail", r.Detail, "lacks the cap_net_admin+ep file capability")
		wantContains(t, "fix", r.Fix, "sudo setcap cap_net_admin+ep "+f.env.Bangerd)
	})
	t.Run("user, bangerd with file capability", func(t *testing.T) {
		f := newFixture(t)
		f.env.EUID, f.env.User = 1000, "dev"
		f.env.Bangerd = writeScript(t, filepath.Join(f.bin, "bangerd"), "exit 0")
		setcap, err := exec.LookPath("setcap")
		if err != nil {
			setcap = "/usr/sbin/setcap"
		}
		if out, err := exec.Command(setcap, "cap_net_admin+ep", f.env.Bangerd).CombinedOutput(); err != nil {
			testhost.Skip(t, "cannot set file capabilities here (setcap: %v: %s)", err, out)
		}
		r := f.run(t, IDNetAdmin)
		wantStatus(t, r, StatusOK)
		wantContains(t, "detail", r.Detail, "cap_net_admin+ep")
	})
	t.Run("inside the daemon", func(t *testing.T) {
		f := newFixture(t)
		f.env.EUID, f.env.InDaemon = 1000, true
		f.env.Bangerd = writeScript(t, filepath.Join(f.bin, "bangerd"), "exit 0")
		r := f.run(t, IDNetAdmin)
		wantStatus(t, r, StatusFail)
		wantContains(t, "fix", r.Fix, "setcap", "banger daemon restart")
		f.setCaps(t, "0000000000001000")
		wantStatus(t, f.run(t, IDNetAdmin), StatusOK)
	})
	t.Run("unreadable status", func(t *testing.T) {
		f := newFixture(t)
		f.env.ProcStatus = filepath.Join(f.root, "nowhere")
		wantStatus(t, f.run(t, IDNetAdmin), StatusWarn)
	})
}

func TestParseFileCaps(t *testing.T) {
	caps := func(magic, permLo, inhLo, permHi, inhHi uint32, extra int) []byte {
		b := make([]byte, 20+extra)
		for i, v := range []uint32{magic, permLo, inhLo, permHi, inhHi} {
			binary.LittleEndian.PutUint32(b[4*i:], v)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
		err  bool
	}{
		{"v2 +ep", caps(0x02000001, 1<<12, 0, 0, 0, 0), true, false},
		{"v2 +p only", caps(0x02000000, 1<<12, 0, 0, 0, 0), false, false},
		{"v2 other cap", caps(0x02000001, 1<<13, 0, 0, 0, 0), false, false},
		{"v3 +ep (namespaced root id)", caps(0x03000001, 1<<12, 0, 0, 0, 4), true, false},
		{"v1 +ep", caps(0x01000001, 1<<12, 0, 0, 0, 0)[:12], true, false},
		{"unknown revision", caps(0x09000001, 1<<12, 0, 0, 0, 0), false, true},
		{"short", []byte{1, 0}, false, true},
	} {
		c, err := parseFileCaps(tc.b)
		if (err != nil) != tc.err || c.netAdmin() != tc.want {
			t.Errorf("%s: netAdmin %v err %v; want %v, error %v", tc.name, c.netAdmin(), err, tc.want, tc.err)
		}
	}
}

func TestVsock(t *testing.T) {
	f := newFixture(t)
	r := f.run(t, IDVsock)
	wantStatus(t, r, StatusOK)
	wantContains(t, "detail", r.Detail, "absent", "Firecracker implements vsock", "virtio-serial")
	f.env.DevVhostVsock = "/dev/null"
	r = f.run(t, IDVsock)
	wantStatus(t, r, StatusOK)
	wantContains(t, "detail", r.Detail, "present", "does not use it")
}

func TestDiskSpace(t *testing.T) {
	f := newFixture(t)
	// The state and data dirs do not exist yet: their filesystem counts.
	r := f.run(t, IDDiskSpace)
	if r.Status == StatusFail {
		t.Skipf("this machine is short of space: %s", r.Detail)
	}
	wantContains(t, "detail", r.Detail, "free for "+f.env.Dirs.State+" and "+f.env.Dirs.Data)

	// Thresholds above any real filesystem exercise the warning and the
	// failure on the same real statfs answer.
	f.env.DiskWarnBytes, f.env.DiskFailBytes = 1<<62, 1
	r = f.run(t, IDDiskSpace)
	wantStatus(t, r, StatusWarn)
	wantContains(t, "fix", r.Fix, "XDG_DATA_HOME")
	f.env.DiskFailBytes = 1 << 61
	r = f.run(t, IDDiskSpace)
	wantStatus(t, r, StatusFail)
	wantContains(t, "detail", r.Detail, "will fail")
}
