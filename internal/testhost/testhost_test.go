package testhost

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain lets the test binary run one helper test in a child process, so
// a test can see whether Skip skipped or failed it.
func TestMain(m *testing.M) {
	if os.Getenv("TESTHOST_CHILD") != "" {
		os.Args = []string{os.Args[0], "-test.run=^TestChild$", "-test.v"}
	}
	os.Exit(m.Run())
}

// TestChild is the child's test: it skips for a missing tool. It does
// nothing outside the child.
func TestChild(t *testing.T) {
	if os.Getenv("TESTHOST_CHILD") == "" {
		return
	}
	NeedTools(t, "no-such-tool-for-banger")
	t.Log("not reached")
}

func runChild(t *testing.T, ci string) (string, error) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "TESTHOST_CHILD=1", "CI="+ci)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestSkipIsFatalUnderCI(t *testing.T) {
	out, err := runChild(t, "")
	if err != nil || !strings.Contains(out, "--- SKIP: TestChild") || !strings.Contains(out, "needs no-such-tool-for-banger") {
		t.Errorf("without CI: err %v, output:\n%s", err, out)
	}
	out, err = runChild(t, "true")
	if err == nil || !strings.Contains(out, "--- FAIL: TestChild") || !strings.Contains(out, "cannot run under CI=true") {
		t.Errorf("with CI=true: err %v, output:\n%s", err, out)
	}
}

func TestNeedToolsFinds(t *testing.T) {
	got := NeedTools(t, "sh")
	if got["sh"] == "" {
		t.Errorf("NeedTools(sh) = %v", got)
	}
}
