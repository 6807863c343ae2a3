package mounts

import "testing"

func TestParseSpec(t *testing.T) {
	good := map[string]string{
		"/src":                 "/src:/src",
		"/src:ro":              "/src:/src:ro",
		"/src:rw":              "/src:/src",
		"/home/u/src:/src":     "/home/u/src:/src",
		"/data/:/mnt/data/:ro": "/data:/mnt/data:ro",
		"rel/dir:/x":           "/cwd/rel/dir:/x",
		".":                    "/cwd:/cwd",
		"/a b:/c d":            "/a b:/c d",
		"/s:/root/src":         "/s:/root/src",
		"/s:/var/www":          "/s:/var/www",
	}
	for in, want := range good {
		s, err := ParseSpec(in, "/cwd")
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", in, err)
			continue
		}
		if s.String() != want {
			t.Errorf("ParseSpec(%q) = %s, want %s", in, s, want)
		}
		if back, err := ParseSpec(s.String(), "/elsewhere"); err != nil || back != s {
			t.Errorf("ParseSpec(%q) = %v %v, want %v", s.String(), back, err, s)
		}
	}
	bad := []string{"", ":/x", "/a:/b:/c", "/a:b", "/a:/", "/a:/etc", "/a:/etc/x", "/a:/root", "/a:/root/.ssh",
		"/a:/proc/x", "/a:/usr", "/a:/x\n", "/a:/tmp", "/a:/root/.ssh/k", "/a:/dev/shm"}
	for _, in := range bad {
		if s, err := ParseSpec(in, "/cwd"); err == nil {
			t.Errorf("ParseSpec(%q) = %v, want an error", in, s)
		}
	}
	if _, err := ParseSpec("rel", ""); err == nil {
		t.Error("a relative host folder without a working folder was taken")
	}
}

func TestCheckSet(t *testing.T) {
	ok := []Spec{{HostDir: "/a", GuestDir: "/a"}, {HostDir: "/b", GuestDir: "/ab"}}
	if err := CheckSet(ok); err != nil {
		t.Error(err)
	}
	for _, bad := range [][]Spec{
		{{HostDir: "/a", GuestDir: "/x"}, {HostDir: "/b", GuestDir: "/x"}},
		{{HostDir: "/a", GuestDir: "/x"}, {HostDir: "/b", GuestDir: "/x/y"}},
		{{HostDir: "/a", GuestDir: "/x/y"}, {HostDir: "/b", GuestDir: "/x"}},
	} {
		if CheckSet(bad) == nil {
			t.Errorf("CheckSet(%v) = nil", bad)
		}
	}
}
