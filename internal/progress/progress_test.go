package progress

import (
	"context"
	"testing"

	"github.com/bangerhq/banger/internal/api"
)

func TestReport(t *testing.T) {
	Report(context.Background(), api.Progress{Phase: "none"}) // no reporter: a no-op
	var got []string
	ctx := With(context.Background(), func(p api.Progress) { got = append(got, p.Phase) })
	Report(ctx, api.Progress{Phase: "disk"})
	Report(context.WithValue(ctx, struct{}{}, 1), api.Progress{Phase: "boot"}) // inherited
	Report(With(ctx, nil), api.Progress{Phase: "removed"})
	if len(got) != 2 || got[0] != "disk" || got[1] != "boot" {
		t.Fatalf("reports %q, want disk and boot", got)
	}
	if From(context.Background()) != nil {
		t.Fatal("From found a reporter in a bare context")
	}
}
