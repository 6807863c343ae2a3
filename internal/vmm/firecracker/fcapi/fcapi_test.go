package fcapi

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/bangerhq/banger/internal/vmm/firecracker/fcspec"
)

// definitions maps each body type to the specification definition it
// follows.
var definitions = map[string]any{
	"MachineConfiguration": MachineConfiguration{},
	"BootSource":           BootSource{},
	"Drive":                Drive{},
	"NetworkInterface":     NetworkInterface{},
	"Vsock":                Vsock{},
	"SerialDevice":         SerialDevice{},
	"Logger":               Logger{},
	"InstanceActionInfo":   InstanceActionInfo{},
	"Vm":                   VM{},
	"InstanceInfo":         InstanceInfo{},
	"FirecrackerVersion":   FirecrackerVersion{},
	"Error":                Error{},
}

// TestFieldsFollowSpec checks every struct tag against the specification:
// the JSON name must be a property of the definition, required properties
// must be present and never omitempty, optional ones always omitempty.
func TestFieldsFollowSpec(t *testing.T) {
	spec, err := fcspec.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	for def, v := range definitions {
		t.Run(def, func(t *testing.T) {
			props, required, err := spec.Properties(def)
			if err != nil {
				t.Fatal(err)
			}
			typ := reflect.TypeOf(v)
			seen := map[string]bool{}
			for i := range typ.NumField() {
				f := typ.Field(i)
				tag := f.Tag.Get("json")
				name, opts, _ := strings.Cut(tag, ",")
				if name == "" || name == "-" {
					t.Errorf("field %s has no json name", f.Name)
					continue
				}
				seen[name] = true
				if !slices.Contains(props, name) {
					t.Errorf("field %s: %q is not a property of %s (properties: %v)", f.Name, name, def, props)
				}
				omit := strings.Contains(opts, "omitempty")
				req := slices.Contains(required, name)
				if req && omit {
					t.Errorf("field %s: %q is required but omitempty", f.Name, name)
				}
				if !req && !omit {
					t.Errorf("field %s: %q is optional but not omitempty (a zero value would be sent)", f.Name, name)
				}
				if !req && f.Type.Kind() == reflect.Bool {
					t.Errorf("field %s: optional boolean must be *bool so that false can be sent", f.Name)
				}
			}
			for _, r := range required {
				if !seen[r] {
					t.Errorf("required property %q of %s has no field", r, def)
				}
			}
		})
	}
}
