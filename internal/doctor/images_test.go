package doctor

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestImageAgentResult(t *testing.T) {
	r := ImageAgentResult(nil)
	wantStatus(t, r, StatusOK)
	wantContains(t, "detail", r.Detail, "no images yet")

	fresh := ImageAgent{Name: "fresh", Source: "debian:bookworm", HasAgent: true}
	r = ImageAgentResult([]ImageAgent{fresh})
	wantStatus(t, r, StatusOK)
	wantContains(t, "detail", r.Detail, AgentImagePath, "fresh")

	old := ImageAgent{Name: "old", Source: "debian:bookworm"}
	r = ImageAgentResult([]ImageAgent{fresh, old})
	wantStatus(t, r, StatusWarn)
	wantContains(t, "detail", r.Detail, "1 of 2 images lack "+AgentImagePath, "built before the agent existed", ": old")
	if strings.Contains(r.Detail, "fresh") {
		t.Errorf("detail %q names the image that has the agent", r.Detail)
	}
	if r.Fix != "banger image rm old && banger image build old --from debian:bookworm" {
		t.Errorf("fix %q", r.Fix)
	}

	// An image that cannot be read is reported as such, not taken for one
	// without the agent.
	gone := ImageAgent{Name: "gone", Err: errors.New("image file: no such file")}
	r = ImageAgentResult([]ImageAgent{fresh, old, gone})
	wantStatus(t, r, StatusWarn)
	wantContains(t, "detail", r.Detail, "1 of 3 images lack", "image gone: image file: no such file")
	wantContains(t, "fix", r.Fix, "banger image rm old && banger image build old --from debian:bookworm", "banger image rm NAME")
}

// TestImageAgentCheckAsksEnv: the check reports what env.ImageAgent (the
// daemon, for `banger doctor`) finds, and skips without it.
func TestImageAgentCheckAsksEnv(t *testing.T) {
	f := newFixture(t)
	r := f.run(t, IDImageAgent)
	wantStatus(t, r, StatusSkip)
	wantContains(t, "detail", r.Detail, "bangerd")

	f.env.ImageAgent = func(context.Context) Result {
		return Result{Status: StatusWarn, Detail: "from the daemon", Fix: "do this"}
	}
	r = f.run(t, IDImageAgent)
	wantStatus(t, r, StatusWarn)
	wantContains(t, "detail", r.Detail, "from the daemon")
	wantContains(t, "fix", r.Fix, "do this")
}
