package doctor

import (
	"context"
	"fmt"
	"strings"
)

// AgentImagePath is where an image carries the guest agent.
const AgentImagePath = "/usr/local/bin/banger-vsock-pingd"

// ImageAgent is what the daemon found when it looked for the guest agent in
// one image (see ImageAgentResult).
type ImageAgent struct {
	Name, Source string
	// HasAgent says the image holds AgentImagePath; Err, when set, says
	// why the image could not be read (HasAgent is then meaningless).
	HasAgent bool
	Err      error
}

// checkImageAgent reports env.ImageAgent's finding. Only the daemon reads
// its database and image files, so `banger doctor` asks it (over RPC) and
// the check is skipped when nothing can answer.
func checkImageAgent(ctx context.Context, env *Env) Result {
	if env.ImageAgent == nil {
		return Result{Status: StatusSkip, Detail: "images are checked by bangerd, which this caller cannot ask"}
	}
	return env.ImageAgent(ctx)
}

// ImageAgentResult is the finding of the image-agent check over images:
// ok when every image holds the guest agent, else a warning naming the
// images without it (with the command that rebuilds each) and the images
// that could not be read.
func ImageAgentResult(images []ImageAgent) Result {
	if len(images) == 0 {
		return Result{Status: StatusOK, Detail: "no images yet"}
	}
	var with, without, problems, fixes []string
	for _, im := range images {
		switch {
		case im.Err != nil:
			problems = append(problems, fmt.Sprintf("image %s: %v", im.Name, im.Err))
		case im.HasAgent:
			with = append(with, im.Name)
		default:
			without = append(without, im.Name)
			fixes = append(fixes, fmt.Sprintf("banger image rm %s && banger image build %s --from %s", im.Name, im.Name, im.Source))
		}
	}
	if len(without) == 0 && len(problems) == 0 {
		return Result{Status: StatusOK, Detail: fmt.Sprintf("%s in every image (%s)", AgentImagePath, strings.Join(with, ", "))}
	}
	var parts []string
	if len(without) > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d images lack %s (built before the agent existed; their VMs cannot be pinged): %s",
			len(without), len(images), AgentImagePath, strings.Join(without, ", ")))
	}
	parts = append(parts, problems...)
	if len(problems) > 0 {
		fixes = append(fixes, "rebuild or remove the images that cannot be read (`banger image rm NAME`)")
	}
	return Result{Status: StatusWarn, Detail: strings.Join(parts, "; "), Fix: strings.Join(fixes, "\n")}
}
