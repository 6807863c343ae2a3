package vm

import (
	"crypto/rand"
	"math/big"
	"regexp"

	"github.com/bangerhq/banger/internal/api"
	"github.com/bangerhq/banger/internal/vmdns"
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidateName checks that name is a DNS label (RFC 1123): 1-63 characters
// of lowercase letters, digits and hyphens, not starting or ending with a
// hyphen. VM names become guest hostnames, so the rule is the hostname rule.
func ValidateName(name string) error {
	if name == vmdns.HostName {
		return api.Errorf(api.ErrInvalid, "the VM name %q is reserved: %s names the host itself; pick another name", name, vmdns.FQDN(name))
	}
	if nameRE.MatchString(name) {
		return nil
	}
	return api.Errorf(api.ErrInvalid,
		"invalid VM name %q: use 1-63 lowercase letters, digits and hyphens, starting and ending with a letter or digit (it becomes the guest's hostname)", name)
}

var adjectives = []string{"agile", "bold", "brave", "bright", "calm", "clever", "cosmic", "crisp", "eager", "fancy",
	"fuzzy", "gentle", "happy", "jolly", "keen", "lively", "lucky", "merry", "nimble", "plucky",
	"quick", "quiet", "rapid", "shiny", "snappy", "spry", "sunny", "swift", "tidy", "witty"}

var nouns = []string{"badger", "beaver", "bison", "cobra", "condor", "coyote", "falcon", "ferret", "gecko", "heron",
	"ibex", "jackal", "koala", "lemur", "lynx", "marmot", "narwhal", "ocelot", "otter", "panda",
	"puffin", "quokka", "raven", "salmon", "tapir", "toucan", "walrus", "wombat", "yak", "zebra"}

// MemorableName returns a random "adjective-noun" name, a valid DNS label.
func MemorableName() string {
	pick := func(l []string) string {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(l))))
		return l[n.Int64()]
	}
	return pick(adjectives) + "-" + pick(nouns)
}
