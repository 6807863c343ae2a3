package fcspec

import (
	"errors"
	"strings"
	"testing"
)

// loadSpec loads the specification kept in the repository.
func loadSpec(t *testing.T) *Spec {
	t.Helper()
	s, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLoad(t *testing.T) {
	s := loadSpec(t)
	if s.Version != "1.16.1" {
		t.Errorf("version %q, want 1.16.1", s.Version)
	}
	props, req, err := s.Properties("Vsock")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(props, ",") != "guest_cid,uds_path,vsock_id" || strings.Join(req, ",") != "guest_cid,uds_path" {
		t.Errorf("Vsock properties %v required %v", props, req)
	}
}

func TestMatch(t *testing.T) {
	s := loadSpec(t)
	for _, tc := range []struct {
		method, path, template, body string
		params                       map[string]string
	}{
		{"GET", "/", "/", "", nil},
		{"put", "/drives/rootfs", "/drives/{drive_id}", "Drive", map[string]string{"drive_id": "rootfs"}},
		{"PATCH", "/drives/rootfs", "/drives/{drive_id}", "PartialDrive", map[string]string{"drive_id": "rootfs"}},
		{"PUT", "/network-interfaces/eth0", "/network-interfaces/{iface_id}", "NetworkInterface", map[string]string{"iface_id": "eth0"}},
		{"PATCH", "/balloon/statistics", "/balloon/statistics", "BalloonStatsUpdate", nil},
		{"PUT", "/actions", "/actions", "InstanceActionInfo", nil},
	} {
		op, err := s.Match(tc.method, tc.path)
		if err != nil {
			t.Errorf("%s %s: %v", tc.method, tc.path, err)
			continue
		}
		if op.Template != tc.template || op.Body != tc.body || len(op.Params) != len(tc.params) {
			t.Errorf("%s %s matched %+v", tc.method, tc.path, op)
		}
		for k, v := range tc.params {
			if op.Params[k] != v {
				t.Errorf("%s %s: param %s = %q, want %q", tc.method, tc.path, k, op.Params[k], v)
			}
		}
	}
	for _, bad := range [][2]string{{"DELETE", "/drives/x"}, {"PUT", "/nope"}, {"GET", "/drives/x/y"}, {"PUT", "/drives/"}} {
		if _, err := s.Match(bad[0], bad[1]); !errors.Is(err, ErrNoRoute) {
			t.Errorf("%s %s: %v, want ErrNoRoute", bad[0], bad[1], err)
		}
	}
}

// TestValidateRequest includes the negative cases that prove the validator
// can fail: without them a contract test that always passes would look the
// same as one that checks something.
func TestValidateRequest(t *testing.T) {
	s := loadSpec(t)
	for _, tc := range []struct {
		name, method, path, body string
		wantErr                  string // "" means valid
	}{
		{"machine config", "PUT", "/machine-config", `{"vcpu_count": 2, "mem_size_mib": 512}`, ""},
		{"logger level Off stays a string", "PUT", "/logger", `{"level": "Off"}`, ""},
		{"vsock", "PUT", "/vsock", `{"guest_cid": 3, "uds_path": "/tmp/v.sock"}`, ""},
		{"drive", "PUT", "/drives/rootfs", `{"drive_id": "rootfs", "is_root_device": true, "path_on_host": "/d", "is_read_only": false}`, ""},
		{"get without body", "GET", "/", ``, ""},

		{"unknown field", "PUT", "/vsock", `{"guest_cid": 3, "uds_path": "/v", "foo": 1}`, "foo"},
		{"unknown nested field", "PUT", "/network-interfaces/eth0", `{"iface_id": "eth0", "host_dev_name": "tap0", "rx_rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1, "burst": 3}}}`, "burst"},
		{"wrong type", "PUT", "/machine-config", `{"vcpu_count": "2", "mem_size_mib": 512}`, "vcpu_count"},
		{"boolean as string", "PUT", "/drives/rootfs", `{"drive_id": "rootfs", "is_root_device": "true"}`, "is_root_device"},
		{"missing required", "PUT", "/boot-source", `{"boot_args": "console=ttyS0"}`, "kernel_image_path"},
		{"enum", "PUT", "/actions", `{"action_type": "Reboot"}`, "action_type"},
		{"minimum", "PUT", "/vsock", `{"guest_cid": 2, "uds_path": "/v"}`, "guest_cid"},
		{"maximum", "PUT", "/machine-config", `{"vcpu_count": 33, "mem_size_mib": 512}`, "vcpu_count"},
		{"null for optional string", "PUT", "/boot-source", `{"kernel_image_path": "/k", "initrd_path": null}`, "initrd_path"},
		{"duplicate field", "PUT", "/vsock", `{"guest_cid": 3, "guest_cid": 4, "uds_path": "/v"}`, "duplicate"},
		{"trailing data", "PUT", "/vsock", `{"guest_cid": 3, "uds_path": "/v"} {}`, "trailing"},
		{"not json", "PUT", "/vsock", `guest_cid=3`, "json"},
		{"empty put", "PUT", "/vsock", ``, "empty body"},
		{"get with body", "GET", "/", `{}`, "takes no body"},
		{"unknown path", "PUT", "/frobnicate", `{}`, "no such operation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.ValidateRequest(tc.method, tc.path, []byte(tc.body))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("valid body rejected: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("invalid body accepted: %s", tc.body)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q does not mention %q", err, tc.wantErr)
			}
			if err != nil {
				t.Logf("%v", err)
			}
		})
	}
}

func TestValidateResponse(t *testing.T) {
	s := loadSpec(t)
	ok := []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/", 200, `{"id": "vm1", "state": "Running", "vmm_version": "1.16.1", "app_name": "Firecracker"}`},
		{"GET", "/version", 200, `{"firecracker_version": "1.16.1"}`},
		{"PUT", "/boot-source", 204, ``},
		{"PUT", "/boot-source", 400, `{"fault_message": "bad"}`},
		{"PUT", "/serial", 400, `{"fault_message": "bad"}`}, // through "default"
	}
	for _, tc := range ok {
		if err := s.ValidateResponse(tc.method, tc.path, tc.status, []byte(tc.body)); err != nil {
			t.Errorf("%s %s %d: %v", tc.method, tc.path, tc.status, err)
		}
	}
	bad := []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/", 200, `{"id": "vm1", "state": "Booting", "vmm_version": "1.16.1", "app_name": "Firecracker"}`},
		{"GET", "/", 200, `{"id": "vm1", "state": "Running", "vmm_version": "1.16.1"}`},
		{"PUT", "/boot-source", 204, `{}`},
		{"PUT", "/boot-source", 400, `{"fault_message": "bad", "code": 1}`},
	}
	for _, tc := range bad {
		if err := s.ValidateResponse(tc.method, tc.path, tc.status, []byte(tc.body)); err == nil {
			t.Errorf("%s %s %d %s: accepted", tc.method, tc.path, tc.status, tc.body)
		}
	}
}
