package guestssh

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/api"
)

func TestShellQuoteRoundTripsThroughSh(t *testing.T) {
	for _, arg := range []string{"plain", "", "two words", "it's", `"dq"`, "$HOME", "a;b", "back\\slash", "new\nline", "*"} {
		out, err := exec.Command("sh", "-c", "printf %s "+shellQuote(arg)).Output()
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != arg {
			t.Errorf("shellQuote(%q) through sh gave %q", arg, out)
		}
	}
}

func TestArgs(t *testing.T) {
	info := api.SSHInfo{User: "root", Host: "172.30.0.2", Port: 22, IdentityFile: "/k", KnownHostsFile: "/kh", HostKeyAlias: "172.30.0.2"}
	got := Args(info, []string{"sh", "-c", "exit 3"})
	want := "-i /k -p 22 -o IdentitiesOnly=yes -o UserKnownHostsFile=/kh -o StrictHostKeyChecking=yes -o HostKeyAlias=172.30.0.2 -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=10 -o LogLevel=ERROR root@172.30.0.2 -- sh -c 'exit 3'"
	if strings.Join(got, " ") != want {
		t.Fatalf("got  %s\nwant %s", strings.Join(got, " "), want)
	}
	if inter := Args(info, nil); inter[len(inter)-2] != "-t" {
		t.Fatalf("interactive ssh lacks -t: %v", inter)
	}
}

func TestReminder(t *testing.T) {
	got := Reminder(api.PingResult{Name: "dev", Alive: true, UptimeSeconds: 14*60 + 5})
	want := `VM "dev" is still running (up 14m). Stop it with: banger vm stop dev`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
