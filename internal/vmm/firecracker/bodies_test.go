package firecracker

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/vmm"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcapi"
	"github.com/bangerhq/banger/internal/vmm/firecracker/fcspec"
)

// loadSpec returns the shared Firecracker API specification, or skips when
// the checkout has no shared/ folder beside it.
func loadSpec(t *testing.T) *fcspec.Spec {
	t.Helper()
	s, err := fcspec.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fullSpec() vmm.Spec {
	return vmm.Spec{
		ID: "vm-1", Name: "dev", Dir: "/var/lib/banger/vms/vm-1",
		CPUs: 2, MemoryMiB: 1024,
		Kernel: "/rt/vmlinux", Initrd: "/rt/initrd.img",
		KernelArgs: "console=ttyS0 reboot=k panic=1 root=/dev/vda rw banger.ip=10.0.0.2/24",
		Disk:       "/var/lib/banger/vms/vm-1/disk.ext4",
		TAP:        "bg-vm-1", MAC: "52:54:00:12:34:56",
		ConsoleLog: "/var/lib/banger/vms/vm-1/console.log",
		Agent:      true,
		VsockCID:   42,
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBodies(t *testing.T) {
	s := fullSpec()
	for _, tc := range []struct {
		name string
		body any
		want string
	}{
		{"machine config", MachineConfig(s), `{"vcpu_count":2,"mem_size_mib":1024}`},
		{"boot source", BootSource(s), `{"kernel_image_path":"/rt/vmlinux","boot_args":"console=ttyS0 reboot=k panic=1 root=/dev/vda rw banger.ip=10.0.0.2/24","initrd_path":"/rt/initrd.img"}`},
		{"boot source without initrd", BootSource(vmm.Spec{Kernel: "/k", KernelArgs: "console=ttyS0"}), `{"kernel_image_path":"/k","boot_args":"console=ttyS0"}`},
		{"drive", Drive(s), `{"drive_id":"rootfs","is_root_device":true,"is_read_only":false,"path_on_host":"/var/lib/banger/vms/vm-1/disk.ext4"}`},
		{"network interface", NetworkInterface(s), `{"iface_id":"eth0","host_dev_name":"bg-vm-1","guest_mac":"52:54:00:12:34:56"}`},
		{"vsock", Vsock(s), `{"guest_cid":42,"uds_path":"/var/lib/banger/vms/vm-1/vsock.sock"}`},
		{"serial", Serial(s), `{"serial_out_path":"/var/lib/banger/vms/vm-1/console.log"}`},
		{"logger", Logger(s), `{"log_path":"/var/lib/banger/vms/vm-1/firecracker.log","level":"Info","show_level":true}`},
		{"instance start", Action(fcapi.ActionInstanceStart), `{"action_type":"InstanceStart"}`},
		{"ctrl-alt-del", Action(fcapi.ActionSendCtrlAltDel), `{"action_type":"SendCtrlAltDel"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mustJSON(t, tc.body); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestArgv(t *testing.T) {
	got, files := Argv("/rt/firecracker/firecracker", fullSpec())
	want := []string{"/rt/firecracker/firecracker", "--api-sock", "/proc/self/fd/3/api.sock", "--id", "vm-1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Argv = %q, want %q", got, want)
	}
	wantFiles := []File{
		{FD: 3, Path: "/var/lib/banger/vms/vm-1/firecracker", Dir: true},
		{FD: 4, Path: "/rt/vmlinux"},
		{FD: 5, Path: "/rt/initrd.img"},
		{FD: 6, Path: "/var/lib/banger/vms/vm-1/disk.ext4", RW: true},
	}
	if !reflect.DeepEqual(files, wantFiles) {
		t.Errorf("files = %+v, want %+v", files, wantFiles)
	}
}

// TestView: what Firecracker is told matches the descriptors Argv passes.
func TestView(t *testing.T) {
	for name, s := range specVariants() {
		_, files := Argv("fc", s)
		v := View(s)
		byPath := map[string]string{}
		for _, f := range files {
			byPath[f.Path] = fmt.Sprintf("/proc/self/fd/%d", f.FD)
		}
		if v.Dir != byPath[JailDir(s.Dir)] {
			t.Errorf("%s: view dir %s, want the jail's descriptor %s", name, v.Dir, byPath[JailDir(s.Dir)])
		}
		for what, pair := range map[string][2]string{"kernel": {s.Kernel, v.Kernel}, "initrd": {s.Initrd, v.Initrd}, "disk": {s.Disk, v.Disk}} {
			if pair[0] != "" && pair[1] != byPath[pair[0]] {
				t.Errorf("%s: view %s %s, want %s", name, what, pair[1], byPath[pair[0]])
			}
			if pair[0] == "" && pair[1] != "" {
				t.Errorf("%s: view %s %s for no file", name, what, pair[1])
			}
		}
	}
	v := View(fullSpec())
	for _, r := range ConfigRequests(v) {
		b := mustJSON(t, r.Body)
		if strings.Contains(b, "/var/lib") || strings.Contains(b, "/rt/") {
			t.Errorf("%s tells firecracker a host path: %s", r.What, b)
		}
	}
}

func TestConfigRequestsOrder(t *testing.T) {
	steps := func(s vmm.Spec) string {
		var w []string
		for _, r := range ConfigRequests(s) {
			w = append(w, r.Method+" "+r.Path)
		}
		return strings.Join(w, ", ")
	}
	full := fullSpec()
	if got, want := steps(full), "PUT /logger, PUT /machine-config, PUT /boot-source, PUT /drives/rootfs, PUT /network-interfaces/eth0, PUT /vsock"; got != want {
		t.Errorf("full spec:\n got %s\nwant %s", got, want)
	}
	minimal := vmm.Spec{ID: "x", Dir: "/d", CPUs: 1, MemoryMiB: 128, Kernel: "/k"}
	if got, want := steps(minimal), "PUT /logger, PUT /machine-config, PUT /boot-source"; got != want {
		t.Errorf("minimal spec:\n got %s\nwant %s", got, want)
	}
}

func TestRootArgConflict(t *testing.T) {
	for args, want := range map[string]string{
		"console=ttyS0":                             "",
		"root=/dev/vda rw":                          "",
		"root=/dev/vdb root=/dev/vda":               "",
		"root=LABEL=rootfs":                         "LABEL=rootfs",
		"root=/dev/vda root=PARTUUID=1234-01 quiet": "PARTUUID=1234-01",
	} {
		if got := RootArgConflict(args); got != want {
			t.Errorf("RootArgConflict(%q) = %q, want %q", args, got, want)
		}
	}
}

// specVariants are the shapes of vmm.Spec the contract test sends through
// every builder.
func specVariants() map[string]vmm.Spec {
	full := fullSpec()
	minimal := vmm.Spec{ID: "m", Dir: "/d", CPUs: 1, MemoryMiB: 128, Kernel: "/k"}
	noVsock := full
	noVsock.VsockCID, noVsock.Agent = 0, false
	noInitrd := full
	noInitrd.Initrd = ""
	big := full
	big.CPUs, big.MemoryMiB = 32, 65536
	return map[string]vmm.Spec{"full": full, "minimal": minimal, "no vsock": noVsock, "no initrd": noInitrd, "32 cpus": big}
}

// TestContract checks that every request body the driver sends validates
// against Firecracker's specification, with unknown fields rejected, and
// that path ids equal body ids. fcspec's own tests prove the validator
// rejects unknown fields and wrong types; TestContractCanFail shows it here.
func TestContract(t *testing.T) {
	spec := loadSpec(t)
	check := func(t *testing.T, method, path string, body any) {
		t.Helper()
		b := []byte(mustJSON(t, body))
		if err := spec.ValidateRequest(method, path, b); err != nil {
			t.Errorf("%s %s %s: %v", method, path, b, err)
			return
		}
		op, _ := spec.Match(method, path)
		var ids map[string]any
		json.Unmarshal(b, &ids)
		for param, v := range op.Params {
			if ids[param] != v {
				t.Errorf("%s %s: path %s %q differs from the body's %v", method, path, param, v, ids[param])
			}
		}
	}
	for name, s := range specVariants() {
		t.Run(name, func(t *testing.T) {
			reqs := ConfigRequests(View(s))
			if len(reqs) < 3 {
				t.Fatalf("only %d requests", len(reqs))
			}
			for _, r := range reqs {
				check(t, r.Method, r.Path, r.Body)
			}
			check(t, "PUT", "/serial", Serial(s))
		})
	}
	for _, a := range []string{fcapi.ActionInstanceStart, fcapi.ActionSendCtrlAltDel, fcapi.ActionFlushMetrics} {
		check(t, "PUT", "/actions", Action(a))
	}
	check(t, "PATCH", "/vm", VMState(fcapi.VMPaused))
	check(t, "PATCH", "/vm", VMState(fcapi.VMResumed))
}

// TestContractCanFail feeds the contract check bodies it must reject, so a
// validator that accepts everything cannot pass unnoticed.
func TestContractCanFail(t *testing.T) {
	spec := loadSpec(t)
	type withExtra struct {
		fcapi.Vsock
		VsockID string `json:"vsock_id_typo"`
	}
	type wrongType struct {
		VcpuCount  string `json:"vcpu_count"`
		MemSizeMib int    `json:"mem_size_mib"`
	}
	for name, tc := range map[string]struct {
		path string
		body any
	}{
		"unknown field": {"/vsock", withExtra{Vsock(fullSpec()), "x"}},
		"wrong type":    {"/machine-config", wrongType{"2", 128}},
		"cid below 3":   {"/vsock", fcapi.Vsock{GuestCID: 2, UDSPath: "/v"}},
		"bad action":    {"/actions", Action("Reboot")},
	} {
		if err := spec.ValidateRequest("PUT", tc.path, []byte(mustJSON(t, tc.body))); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
