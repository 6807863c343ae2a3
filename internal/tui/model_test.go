package tui

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/muesli/termenv"

	"github.com/bangerhq/banger/internal/api"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func TestMain(m *testing.M) {
	flag.Parse()
	// Goldens are plain text: no colours or attributes.
	lipgloss.SetColorProfile(termenv.Ascii)
	os.Exit(m.Run())
}

func stripANSI(s string) string { return ansi.Strip(s) }

// driver runs a Model the way tea.Program does (commands in goroutines,
// messages back into Update one at a time) without a terminal.
type driver struct {
	t    *testing.T
	m    *Model
	msgs chan tea.Msg
	quit bool
}

func newDriver(t *testing.T, m *Model) *driver {
	d := &driver{t: t, m: m, msgs: make(chan tea.Msg, 1024)}
	d.m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	d.run(m.Init())
	return d
}

func (d *driver) run(cmd tea.Cmd) {
	if cmd != nil {
		go func() { d.msgs <- cmd() }()
	}
}

func (d *driver) send(msg tea.Msg) {
	_, cmd := d.m.Update(msg)
	d.run(cmd)
}

func (d *driver) handle(msg tea.Msg) {
	switch msg := msg.(type) {
	case nil:
	case tea.BatchMsg:
		for _, c := range msg {
			d.run(c)
		}
	case tea.QuitMsg:
		d.quit = true
	default:
		d.send(msg)
	}
}

var specialKeys = map[string]tea.KeyType{
	"enter": tea.KeyEnter, "esc": tea.KeyEscape, "tab": tea.KeyTab, "shift+tab": tea.KeyShiftTab,
	"up": tea.KeyUp, "down": tea.KeyDown, "ctrl+c": tea.KeyCtrlC,
}

// keys sends each key; a name in specialKeys is that key, anything else is
// typed rune by rune.
func (d *driver) keys(keys ...string) {
	for _, k := range keys {
		if kt, ok := specialKeys[k]; ok {
			d.send(tea.KeyMsg{Type: kt})
			continue
		}
		for _, r := range k {
			d.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
		}
	}
}

// until processes messages until cond holds.
func (d *driver) until(what string, timeout time.Duration, cond func() bool) {
	d.t.Helper()
	deadline := time.After(timeout)
	for !cond() {
		select {
		case msg := <-d.msgs:
			d.handle(msg)
		case <-deadline:
			d.t.Fatalf("timed out waiting for %s; screen:\n%s", what, d.m.View())
		}
	}
}

func (d *driver) idle() bool { return len(d.m.pending) == 0 && d.m.sshBusy == "" && !d.m.fetching }

func golden(t *testing.T, name, got string) {
	t.Helper()
	lines := strings.Split(got, "\n")
	if len(lines) != 24 {
		t.Errorf("%s: screen has %d lines, want 24", name, len(lines))
	}
	for i, l := range lines {
		if w := ansi.StringWidth(l); w > 80 {
			t.Errorf("%s: line %d is %d columns wide", name, i+1, w)
		}
	}
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s: screen differs from %s (go test -update rewrites it)\n--- got:\n%s\n--- want:\n%s", name, path, got, want)
	}
}

var fixedNow = func() time.Time { return time.Date(2025, 1, 2, 4, 0, 0, 0, time.UTC) }

func newTestModel(b Backend) *Model {
	return New(context.Background(), Options{
		Backend: b, PollInterval: time.Hour, Now: fixedNow,
		Reminder: func(r api.PingResult) string { return "REMINDER " + r.Name },
	})
}

func screen(m *Model) string { return stripANSI(m.View()) }

// startError is how the daemon fails to start charlie, whose folder and
// kernel are missing.
const startError = "start qemu for vm vm0000003: invalid spec: vm folder: stat " + stateDir + "/vms/vm0000003: no such file or directory\n" +
	"kernel: stat /nonexistent/vmlinux: no such file or directory\n" +
	"disk: stat " + stateDir + "/vms/vm0000003/disk.ext4: no such file or directory"

// TestScreens drives the model against the test backend and compares
// whole 80x24 screens with goldens.
func TestScreens(t *testing.T) {
	b := seedBasic()
	b.startErr["charlie"] = startError
	m := newTestModel(b)
	d := newDriver(t, m)
	d.until("first list", 10*time.Second, func() bool { return m.loaded })

	t.Run("list", func(t *testing.T) {
		golden(t, "list", screen(m))
	})
	t.Run("detail with last error", func(t *testing.T) {
		d.keys("j", "j", "j")
		if m.vmList.selected != "charlie" {
			t.Fatalf("selected %q, want charlie", m.vmList.selected)
		}
		golden(t, "detail", screen(m))
	})
	t.Run("images", func(t *testing.T) {
		d.keys("i")
		golden(t, "images", screen(m))
		d.keys("esc")
		if m.page != m.vmList {
			t.Fatal("esc did not return to the VM list")
		}
	})
	t.Run("confirm delete", func(t *testing.T) {
		d.keys("d")
		golden(t, "confirm_delete", screen(m))
		d.keys("n")
		if m.overlay != nil || m.status != "cancelled" {
			t.Fatalf("n did not cancel: overlay %T status %q", m.overlay, m.status)
		}
	})
	t.Run("help", func(t *testing.T) {
		d.keys("?")
		golden(t, "help", screen(m))
		d.keys("x")
		if m.overlay != nil || len(m.pending) != 0 {
			t.Fatalf("a key in the help did more than close it: overlay %T, pending %v", m.overlay, m.pending)
		}
	})
	t.Run("create form", func(t *testing.T) {
		d.keys("n", "Bad_Name", "tab", "default", "tab", "2", "tab", "512", "tab", "4G")
		golden(t, "create_form", screen(m))
	})
	t.Run("create rejected by the daemon", func(t *testing.T) {
		d.keys("enter")
		d.until("create to fail", 10*time.Second, func() bool { _, ok := m.overlay.(*createForm); return d.idle() && ok })
		if f := m.overlay.(*createForm); !strings.Contains(f.err, "Bad_Name") {
			t.Errorf("form error %q does not carry the daemon's message", f.err)
		}
		golden(t, "create_error", screen(m))
		d.keys("esc")
	})
	t.Run("create form checks numbers", func(t *testing.T) {
		d.keys("n", "tab", "tab", "two", "enter")
		f, ok := m.overlay.(*createForm)
		if !ok || !strings.Contains(f.err, `CPUs: "two" is not a positive whole number`) {
			t.Fatalf("form: %T %+v", m.overlay, f)
		}
		d.keys("esc")
	})
	t.Run("start error", func(t *testing.T) {
		d.keys("s")
		if m.pending["charlie"] != opStart {
			t.Fatalf("pending = %v", m.pending)
		}
		d.until("start to fail", 10*time.Second, func() bool { return d.idle() && m.statusErr })
		if !strings.HasPrefix(m.status, "start charlie: ") {
			t.Fatalf("status %q", m.status)
		}
		golden(t, "start_error", screen(m))
	})
	t.Run("ssh to a stopped VM", func(t *testing.T) {
		d.keys("k")
		d.keys("enter")
		d.until("ssh info", 10*time.Second, func() bool { return d.idle() && m.status != "" })
		if !m.statusErr || m.status != "ssh bravo: VM \"bravo\" is stopped: start it with `banger vm start bravo`" {
			t.Fatalf("status %q", m.status)
		}
	})
	t.Run("lost connection", func(t *testing.T) {
		b.setDown(true)
		d.send(tickMsg{gen: m.pollGen})
		d.until("connection error", 10*time.Second, func() bool { return m.connErr != nil && !m.fetching })
		m.setStatus("", false)
		golden(t, "lost_connection", screen(m))
	})
	t.Run("reconnect", func(t *testing.T) {
		b.setDown(false)
		d.send(tickMsg{gen: m.pollGen})
		d.until("reconnect", 10*time.Second, func() bool { return m.connErr == nil && !m.fetching })
		if m.status != "reconnected to bangerd" || len(m.vms) != 4 {
			t.Fatalf("status %q, %d VMs", m.status, len(m.vms))
		}
	})
	t.Run("delete", func(t *testing.T) {
		d.keys("g")
		d.keys("d", "y")
		d.until("VM gone from the list", 10*time.Second, func() bool {
			if !d.idle() {
				return false
			}
			for _, v := range m.vms {
				if strings.HasPrefix(v.Name, "a-very-long") {
					return false
				}
			}
			return true
		})
		if m.statusErr || !strings.HasPrefix(m.status, "deleted a-very-long-vm-name-that-is-cut in ") {
			t.Fatalf("status %q", m.status)
		}
	})
	t.Run("quit", func(t *testing.T) {
		d.keys("q")
		d.until("quit", time.Second, func() bool { return d.quit })
		if m.View() != "" {
			t.Error("view after quit is not empty")
		}
	})
}

// TestQuitWhileBusy: quitting while an operation runs asks first; ctrl+c
// twice quits anyway.
func TestQuitWhileBusy(t *testing.T) {
	b := seedBasic()
	b.gate = make(chan struct{})
	defer close(b.gate)
	m := newTestModel(b)
	d := newDriver(t, m)
	d.until("first list", 10*time.Second, func() bool { return m.loaded })
	d.keys("s", "q")
	c, ok := m.overlay.(*confirm)
	if !ok || !strings.Contains(c.body, "starting a-very-long-vm-name-that-is-cut") {
		t.Fatalf("q while starting: overlay %T %+v", m.overlay, c)
	}
	d.keys("ctrl+c")
	if !m.quit {
		t.Fatal("ctrl+c in the quit question did not quit")
	}
}

// TestBootPhasesShow: while a start runs, the status line shows the boot
// phase the daemon reported last; it goes when the start ends.
func TestBootPhasesShow(t *testing.T) {
	b := seedBasic()
	b.gate = make(chan struct{})
	m := newTestModel(b)
	d := newDriver(t, m)
	d.until("first list", 10*time.Second, func() bool { return m.loaded })
	d.keys("j", "s") // start alpha
	d.until("the boot phase", 10*time.Second, func() bool {
		return strings.Contains(screen(m), "starting alpha: boot, kernel booting (qemu pid 4242, tcg)")
	})
	close(b.gate)
	d.until("the start to end", 10*time.Second, d.idle)
	if scr := screen(m); strings.Contains(scr, "kernel booting") || m.statusErr {
		t.Fatalf("after the start:\n%s", scr)
	}
}

// TestOpsReachTheDaemon: each key's operation is the daemon call it names.
func TestOpsReachTheDaemon(t *testing.T) {
	b := seedBasic()
	m := newTestModel(b)
	d := newDriver(t, m)
	d.until("first list", 10*time.Second, func() bool { return m.loaded })
	state := func(name string) string {
		for _, v := range m.vms {
			if v.Name == name {
				return v.State
			}
		}
		return "gone"
	}
	d.keys("j") // alpha
	for _, step := range []struct {
		keys []string
		want string
	}{
		{[]string{"s"}, api.StateRunning},
		{[]string{"x"}, api.StateStopped},
		{[]string{"r"}, api.StateRunning},
		{[]string{"p"}, api.StatePaused},
		{[]string{"p"}, api.StateRunning},
		{[]string{"p"}, api.StatePaused},
		{[]string{"x"}, api.StateStopped},
		{[]string{"s"}, api.StateRunning},
		{[]string{"X", "y"}, api.StateStopped},
		{[]string{"s"}, api.StateRunning},
		{[]string{"d", "y"}, "gone"},
	} {
		d.keys(step.keys...)
		d.until(strings.Join(step.keys, " "), 10*time.Second, func() bool { return d.idle() && state("alpha") == step.want })
		if m.statusErr {
			t.Fatalf("after %v: %s", step.keys, m.status)
		}
	}
}

// TestResize checks every screen line fits after resizes, down to tiny.
func TestResize(t *testing.T) {
	m := newTestModel(seedBasic())
	d := newDriver(t, m)
	d.until("first list", 10*time.Second, func() bool { return m.loaded })
	for _, sz := range [][2]int{{120, 40}, {80, 24}, {60, 15}, {40, 10}, {20, 5}} {
		d.send(tea.WindowSizeMsg{Width: sz[0], Height: sz[1]})
		for _, keys := range [][]string{nil, {"i"}, {"i"}, {"d"}, {"esc"}, {"n"}, {"esc"}, {"?"}, {"x"}} {
			d.keys(keys...)
			lines := strings.Split(m.View(), "\n")
			if len(lines) != sz[1] {
				t.Errorf("%dx%d after %v: %d lines", sz[0], sz[1], keys, len(lines))
			}
			for i, l := range lines {
				if w := ansi.StringWidth(l); w > sz[0] {
					t.Errorf("%dx%d after %v: line %d is %d wide", sz[0], sz[1], keys, i, w)
				}
			}
		}
	}
}

// TestSSHReminder checks the status line after an SSH session.
func TestSSHReminder(t *testing.T) {
	m := New(context.Background(), Options{Backend: nil, Reminder: func(r api.PingResult) string { return "still up: " + r.Name }})
	m.onPing(pingMsg{name: "dev", r: api.PingResult{Name: "dev", Alive: true}})
	if m.status != "still up: dev" || m.statusErr {
		t.Errorf("alive: status %q err %v", m.status, m.statusErr)
	}
	m.onPing(pingMsg{name: "dev", r: api.PingResult{Name: "dev", State: "stopped"}})
	if m.status != "ssh session to dev ended" {
		t.Errorf("stopped: status %q", m.status)
	}
	args := m.SSHCommand(api.SSHInfo{User: "root", Host: "10.0.0.2", Port: 22, IdentityFile: "/k"}).Args
	if got := strings.Join(args, " "); !regexp.MustCompile(`^ssh .*root@10\.0\.0\.2$`).MatchString(got) {
		t.Errorf("ssh command %q", got)
	}
}

// TestShellAction: "e" runs the shell command for the selected VM, and its
// end is told in the status line.
func TestShellAction(t *testing.T) {
	var ran string
	m := New(context.Background(), Options{Backend: seedBasic(), PollInterval: time.Hour, Now: fixedNow,
		ShellCommand: func(vm string) *exec.Cmd { ran = vm; return exec.Command("true") }})
	d := newDriver(t, m)
	d.until("first list", 10*time.Second, func() bool { return m.loaded })
	_, cmd := m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{'e'}})
	if cmd == nil || ran == "" || ran != m.vmList.selected {
		t.Fatalf("e ran the shell for %q (selected %q), cmd %v", ran, m.vmList.selected, cmd != nil)
	}
	m.onShellDone(shellDoneMsg{name: ran})
	if m.status != "shell in "+ran+" ended" || m.statusErr {
		t.Errorf("status %q", m.status)
	}
	if c := agentShell("dev"); filepath.Base(c.Path) != "banger" || strings.Join(c.Args[1:], " ") != `vm exec -it dev -- sh -c exec "${SHELL:-/bin/sh}" -l` {
		t.Errorf("default shell command: %s %q", c.Path, c.Args)
	}
}
