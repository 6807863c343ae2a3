// Package fcspec loads Firecracker's API specification (Swagger 2.0, YAML)
// and validates request and response bodies against it, the way Firecracker
// itself judges them: a body with a property the specification does not
// define is rejected, as are duplicate properties, missing required ones,
// wrong types and values outside an enum or range.
//
// The specification's definitions do not say additionalProperties: false,
// yet Firecracker deserializes every body with serde's deny_unknown_fields.
// Load therefore adds additionalProperties: false to every object schema
// that lists properties (free-form objects such as MmdsContentsObject stay
// open). Definitions are validated as JSON Schema draft 4, which is what
// Swagger 2.0 schemas are a dialect of; Swagger-only keywords (readOnly,
// example, discriminator) are ignored.
//
// The YAML is read with gopkg.in/yaml.v3 (YAML 1.2 scalars), not a YAML 1.1
// reader: under YAML 1.1 the Logger level "Off" would become the boolean
// false.
//
// The package is meant for tests and test tooling; banger itself does not
// load the specification at run time.
package fcspec

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// FileName is the file name of the specification banger is tested against.
const FileName = "firecracker-api-v1.16.1.yaml"

// SpecFile is the specification's path inside this package's folder: it is
// kept in the repository as test data, unchanged from Firecracker's
// repository at tag v1.16.1 (src/firecracker/swagger/firecracker.yaml),
// with Firecracker's LICENSE (Apache-2.0) and NOTICE beside it.
const SpecFile = "spec/" + FileName

//go:embed spec/firecracker-api-v1.16.1.yaml
var specYAML []byte

// ErrNoRoute is wrapped by Match and ValidateRequest when the specification
// has no operation for a method and path.
var ErrNoRoute = errors.New("no such operation in the firecracker api specification")

// Spec is a loaded specification. It is safe for concurrent use.
type Spec struct {
	// Version is info.version of the specification, e.g. "1.16.1".
	Version string

	ops  []operation
	defs map[string]*definition
}

type definition struct {
	schema     *jsonschema.Schema
	properties []string // sorted
	required   []string // sorted
}

type operation struct {
	method    string // upper case
	template  string // e.g. /drives/{drive_id}
	segments  []string
	id        string // operationId
	bodyDef   string // definition name of the body, "" when the operation takes none
	responses map[string]string
}

// Operation is the result of Match.
type Operation struct {
	// Method is the HTTP method in upper case.
	Method string
	// Template is the specification's path, e.g. "/drives/{drive_id}".
	Template string
	// ID is the specification's operationId, e.g. "putGuestDriveByID".
	ID string
	// Body is the name of the definition the request body must follow, ""
	// when the operation takes no body.
	Body string
	// Params are the path parameters, e.g. {"drive_id": "rootfs"}.
	Params map[string]string
}

// Load reads and compiles the specification at path.
func Load(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load firecracker api specification: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("load firecracker api specification %s: %w", path, err)
	}
	return s, nil
}

// Parse compiles a specification given as Swagger 2.0 YAML (or JSON).
func Parse(data []byte) (*Spec, error) {
	var raw any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse yaml: %w", err)
	}
	doc, ok := normalize(raw).(map[string]any)
	if !ok {
		return nil, errors.New("specification is not a mapping")
	}
	if v, _ := doc["swagger"].(string); v != "2.0" {
		return nil, fmt.Errorf("swagger version %q: want \"2.0\"", v)
	}
	s := &Spec{defs: map[string]*definition{}}
	if info, ok := doc["info"].(map[string]any); ok {
		s.Version, _ = info["version"].(string)
	}
	defs, ok := doc["definitions"].(map[string]any)
	if !ok || len(defs) == 0 {
		return nil, errors.New("specification has no definitions")
	}
	paths, _ := doc["paths"].(map[string]any)
	for tmpl, v := range paths {
		methods, _ := v.(map[string]any)
		for method, v := range methods {
			op, _ := v.(map[string]any)
			if op == nil {
				continue
			}
			o := operation{method: strings.ToUpper(method), template: tmpl, segments: split(tmpl), responses: map[string]string{}}
			o.id, _ = op["operationId"].(string)
			params, _ := op["parameters"].([]any)
			for _, p := range params {
				pm, _ := p.(map[string]any)
				if pm["in"] == "body" {
					sch, _ := pm["schema"].(map[string]any)
					o.bodyDef = schemaName(defs, sch, o.method+" "+tmpl+" body")
				}
			}
			resps, _ := op["responses"].(map[string]any)
			for code, r := range resps {
				rm, _ := r.(map[string]any)
				if sch, ok := rm["schema"].(map[string]any); ok {
					o.responses[code] = schemaName(defs, sch, o.method+" "+tmpl+" response "+code)
				} else {
					o.responses[code] = ""
				}
			}
			for _, name := range append([]string{o.bodyDef}, mapValues(o.responses)...) {
				if _, ok := defs[name]; name != "" && !ok {
					return nil, fmt.Errorf("%s %s refers to undefined definition %q", o.method, tmpl, name)
				}
			}
			s.ops = append(s.ops, o)
		}
	}
	for _, d := range defs {
		closeObjects(d)
	}
	// The definitions alone form the schema resource, so that the
	// specification's "#/definitions/X" references resolve inside it.
	js, err := json.Marshal(map[string]any{"definitions": defs})
	if err != nil {
		return nil, fmt.Errorf("convert definitions to json: %w", err)
	}
	res, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return nil, fmt.Errorf("convert definitions to json: %w", err)
	}
	const url = "file:///fcspec/definitions.json"
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft4)
	if err := c.AddResource(url, res); err != nil {
		return nil, fmt.Errorf("add definitions: %w", err)
	}
	for name, d := range defs {
		sch, err := c.Compile(url + "#/definitions/" + escapePointer(name))
		if err != nil {
			return nil, fmt.Errorf("compile definition %s: %w", name, err)
		}
		def := &definition{schema: sch}
		if m, ok := d.(map[string]any); ok {
			if props, ok := m["properties"].(map[string]any); ok {
				for p := range props {
					def.properties = append(def.properties, p)
				}
			}
			if req, ok := m["required"].([]any); ok {
				for _, r := range req {
					if rs, ok := r.(string); ok {
						def.required = append(def.required, rs)
					}
				}
			}
		}
		slices.Sort(def.properties)
		slices.Sort(def.required)
		s.defs[name] = def
	}
	if len(s.ops) == 0 {
		return nil, errors.New("specification has no paths")
	}
	// A stable order makes Match deterministic.
	slices.SortFunc(s.ops, func(a, b operation) int {
		return strings.Compare(a.method+" "+a.template, b.method+" "+b.template)
	})
	return s, nil
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// normalize turns what yaml.v3 decodes into JSON-compatible values: mapping
// keys become strings (response codes such as 200 are integers in YAML).
func normalize(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = normalize(e)
		}
		return t
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[fmt.Sprint(k)] = normalize(e)
		}
		return m
	case []any:
		for i, e := range t {
			t[i] = normalize(e)
		}
		return t
	default:
		return v
	}
}

// closeObjects adds additionalProperties: false to every schema below v
// that lists properties and says nothing about additional ones.
func closeObjects(v any) {
	switch t := v.(type) {
	case map[string]any:
		if props, ok := t["properties"].(map[string]any); ok {
			if _, set := t["additionalProperties"]; !set {
				t["additionalProperties"] = false
			}
			for _, p := range props {
				closeObjects(p)
			}
		}
		for k, e := range t {
			if k != "properties" {
				closeObjects(e)
			}
		}
	case []any:
		for _, e := range t {
			closeObjects(e)
		}
	}
}

// schemaName returns the definition a body or response schema refers to.
// An inline schema (GET /mmds has one) is added to defs under the name
// "inline: <what>" so that it is compiled like the others.
func schemaName(defs map[string]any, sch map[string]any, what string) string {
	if ref, ok := sch["$ref"].(string); ok && len(sch) == 1 {
		if name, ok := strings.CutPrefix(ref, "#/definitions/"); ok {
			return name
		}
	}
	name := "inline: " + what
	defs[name] = sch
	return name
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func split(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// Match finds the operation for method and path (no query string). It
// returns an error wrapping ErrNoRoute when the specification has none.
func (s *Spec) Match(method, path string) (Operation, error) {
	o, params, err := s.match(method, path)
	if err != nil {
		return Operation{}, err
	}
	return Operation{Method: o.method, Template: o.template, ID: o.id, Body: o.bodyDef, Params: params}, nil
}

// match prefers the operation with the most literal segments, so a literal
// path wins over a template of the same length.
func (s *Spec) match(method, path string) (*operation, map[string]string, error) {
	method = strings.ToUpper(method)
	segs := split(path)
	var best *operation
	var bestParams map[string]string
	bestLiterals := -1
	for i := range s.ops {
		o := &s.ops[i]
		if o.method != method || len(o.segments) != len(segs) {
			continue
		}
		params := map[string]string{}
		literals := 0
		ok := true
		for j, seg := range o.segments {
			if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
				if segs[j] == "" {
					ok = false
					break
				}
				params[seg[1:len(seg)-1]] = segs[j]
				continue
			}
			if seg != segs[j] {
				ok = false
				break
			}
			literals++
		}
		if ok && literals > bestLiterals {
			best, bestParams, bestLiterals = o, params, literals
		}
	}
	if best == nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, ErrNoRoute)
	}
	return best, bestParams, nil
}

// ValidateRequest checks a request the way Firecracker's API server would
// judge its shape: the method and path must be an operation of the
// specification; a GET must have no body; a PUT or PATCH must have a
// non-empty body when the operation takes one, and that body must be one
// JSON value that validates against the operation's body definition (with
// unknown and duplicate properties rejected). It does not check rules the
// specification cannot express, such as a path id equalling the body's id.
func (s *Spec) ValidateRequest(method, path string, body []byte) error {
	op, err := s.Match(method, path)
	if err != nil {
		return err
	}
	empty := len(bytes.TrimSpace(body)) == 0
	switch {
	case op.Body == "" && !empty:
		return fmt.Errorf("%s %s takes no body", op.Method, path)
	case op.Body == "":
		return nil
	case empty:
		return fmt.Errorf("%s %s: empty body, want a %s", op.Method, path, op.Body)
	}
	if err := s.ValidateDefinition(op.Body, body); err != nil {
		return fmt.Errorf("%s %s: %w", op.Method, path, err)
	}
	return nil
}

// ValidateResponse checks a response of the operation for method and path:
// the status must be one the operation lists (or it must list "default"),
// and a body, when the matching response has a schema, must validate
// against it. A response without a schema must have no body.
func (s *Spec) ValidateResponse(method, path string, status int, body []byte) error {
	o, _, err := s.match(method, path)
	if err != nil {
		return err
	}
	def, ok := o.responses[strconv.Itoa(status)]
	if !ok {
		if def, ok = o.responses["default"]; !ok {
			return fmt.Errorf("%s %s: status %d is not a response of %s", o.method, path, status, o.id)
		}
	}
	empty := len(bytes.TrimSpace(body)) == 0
	if def == "" {
		if !empty {
			return fmt.Errorf("%s %s: status %d has no body in the specification, got %q", o.method, path, status, body)
		}
		return nil
	}
	if err := s.ValidateDefinition(def, body); err != nil {
		return fmt.Errorf("%s %s response %d: %w", o.method, path, status, err)
	}
	return nil
}

// ValidateDefinition checks that body is one JSON value, without duplicate
// object keys, that validates against the named definition.
func (s *Spec) ValidateDefinition(name string, body []byte) error {
	def, ok := s.defs[name]
	if !ok {
		return fmt.Errorf("no definition %q in the specification", name)
	}
	if err := checkDuplicateKeys(body); err != nil {
		return fmt.Errorf("invalid %s: %w", name, err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("invalid %s: not json: %w", name, err)
	}
	if err := def.schema.Validate(v); err != nil {
		return fmt.Errorf("invalid %s: %s", name, flatten(err))
	}
	return nil
}

// Properties returns the sorted property names of a definition and the
// sorted names of the required ones.
func (s *Spec) Properties(name string) (properties, required []string, err error) {
	def, ok := s.defs[name]
	if !ok {
		return nil, nil, fmt.Errorf("no definition %q in the specification", name)
	}
	return slices.Clone(def.properties), slices.Clone(def.required), nil
}

// flatten turns a jsonschema validation error into one line: the leaf
// causes, each with the location in the instance.
func flatten(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(ve.Error()), "\n")
	var out []string
	for _, l := range lines[1:] { // the first line names the schema URL
		if l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "- ")); l != "" {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return ve.Error()
	}
	return strings.Join(out, "; ")
}

// checkDuplicateKeys reports an object with the same key twice, which
// serde (and so Firecracker) rejects while encoding/json keeps the last. It
// also rejects anything after the first JSON value.
func checkDuplicateKeys(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := walkValue(dec); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the json value")
	}
	return nil
}

func walkValue(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("not json: %w", err)
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return fmt.Errorf("not json: %w", err)
			}
			k, _ := kt.(string)
			if seen[k] {
				return fmt.Errorf("duplicate field %q", k)
			}
			seen[k] = true
			if err := walkValue(dec); err != nil {
				return err
			}
		}
		_, err = dec.Token() // '}'
	case json.Delim('['):
		for dec.More() {
			if err := walkValue(dec); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ']'
	}
	if err != nil {
		return fmt.Errorf("not json: %w", err)
	}
	return nil
}

var embedded struct {
	once sync.Once
	spec *Spec
	err  error
}

// Embedded returns the specification kept in the repository (SpecFile),
// compiled once per process.
func Embedded() (*Spec, error) {
	embedded.once.Do(func() {
		embedded.spec, embedded.err = Parse(specYAML)
		if embedded.err != nil {
			embedded.err = fmt.Errorf("load firecracker api specification %s: %w", SpecFile, embedded.err)
		}
	})
	return embedded.spec, embedded.err
}
