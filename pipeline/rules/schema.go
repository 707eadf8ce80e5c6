package rules

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// MaxViolations is how many violations [Schema.Validate] reports at most.
const MaxViolations = 5

// Schema is a compiled JSON Schema (draft 2020-12 unless the schema says
// otherwise with $schema). It is safe for concurrent use.
type Schema struct {
	name string
	sch  *jsonschema.Schema
	// fast says without allocating when a document is valid (see
	// schema_fast.go); nil when the schema uses what it does not decide.
	fast *fastNode
	// cost bounds what the library may spend on a document (see
	// schema_cost.go).
	cost *costPlan
}

// CompileSchema compiles the JSON Schema in data; name (the file it came
// from) is used in messages. References to other documents are refused:
// a schema must be one self-contained file, so loading does no I/O.
func CompileSchema(name string, data []byte) (*Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("schema is not valid JSON: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noLoader{})
	const loc = "pipelined:///schema.json"
	if err := c.AddResource(loc, doc); err != nil {
		return nil, schemaError(err)
	}
	sch, err := c.Compile(loc)
	if err != nil {
		return nil, schemaError(err)
	}
	fast, nodes := newFastPath(sch)
	return &Schema{name: name, sch: sch, fast: fast, cost: newCostPlan(sch, nodes, schemaDoc{c, loc, doc})}, nil
}

// noLoader refuses to load referenced documents.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema references %s: only self-contained schemas are supported", url)
}

// schemaError makes a compile error one line, without the internal URL.
func schemaError(err error) error {
	msg := strings.ReplaceAll(err.Error(), "pipelined:///schema.json", "")
	msg = strings.Join(strings.Fields(msg), " ")
	return errors.New(msg)
}

// Name returns the name the schema was compiled with.
func (s *Schema) Name() string { return s.name }

var printer = message.NewPrinter(language.English)

// Validate checks doc, a document as [Env.Body] holds it (numbers as
// float64), and returns up to [MaxViolations] violations, each
// "JSON-pointer: what is wrong" ("/data/call_duration: expected number,
// got string"; "(root)" for the document itself). None means doc is valid.
//
// A document the fast path finds valid is not given to the library, which
// would allocate about a hundred times to say the same; any other goes to
// the library, whose answer this is, unless checking it could cost more
// than a fixed budget (schema_cost.go): Validate then answers the one
// violation "(root): body too complex to check against the schema: ...".
// [Schema.Check] tells that answer apart.
func (s *Schema) Validate(doc any) []string {
	v, err := s.Check(doc)
	if err != nil {
		return []string{"(root): " + err.Error()}
	}
	return v
}

// Check is [Schema.Validate] with a body too costly to check told apart:
// it returns a [*ComplexityError] (errors.Is [ErrTooComplex]) and no
// violations for a document that the library could take too long on (a
// deeply nested body under a recursive oneOf or anyOf), without giving it
// to the library. A document within the budget gets Validate's answer.
func (s *Schema) Check(doc any) ([]string, error) {
	if s.fast != nil && s.fast.verdict(doc) == valid {
		return nil, nil
	}
	if s.cost != nil {
		if budget, ok := s.cost.within(doc); !ok {
			return nil, &ComplexityError{Budget: budget}
		}
	}
	return s.library(doc), nil
}

// library is the library's answer for doc.
func (s *Schema) library(doc any) []string {
	err := s.sch.Validate(doc)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return []string{"(root): " + err.Error()}
	}
	var out []string
	leaves(ve, &out)
	if len(out) == 0 {
		out = append(out, pointer(ve.InstanceLocation)+": "+ve.ErrorKind.LocalizedString(printer))
	}
	// The validator walks objects in map order: sort, so that the same
	// body always gets the same answer.
	sort.Strings(out)
	return out[:min(len(out), MaxViolations)]
}

// maxLeaves bounds the violations collected before sorting.
const maxLeaves = 256

// leaves appends the innermost errors of e, the ones that say what is wrong.
func leaves(e *jsonschema.ValidationError, out *[]string) {
	if len(*out) >= maxLeaves {
		return
	}
	if len(e.Causes) == 0 {
		*out = append(*out, pointer(e.InstanceLocation)+": "+describe(e.ErrorKind))
		return
	}
	for _, c := range e.Causes {
		leaves(c, out)
	}
}

func describe(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Type:
		// "expected number or null": the type first, null (optional) last.
		want := make([]string, 0, len(k.Want))
		null := false
		for _, w := range k.Want {
			if w == "null" {
				null = true
				continue
			}
			want = append(want, w)
		}
		if null {
			want = append(want, "null")
		}
		return "expected " + strings.Join(want, " or ") + ", got " + k.Got
	case *kind.MaxItems:
		return fmt.Sprintf("%d items, more than the %d allowed", k.Got, k.Want)
	case *kind.Required:
		return "missing required " + strings.Join(quoteAll(k.Missing), ", ")
	}
	return k.LocalizedString(printer)
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = fmt.Sprintf("%q", v)
	}
	return out
}

// pointer writes a JSON pointer (RFC 6901) from its tokens.
func pointer(tokens []string) string {
	if len(tokens) == 0 {
		return "(root)"
	}
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		t = strings.ReplaceAll(t, "~", "~0")
		b.WriteString(strings.ReplaceAll(t, "/", "~1"))
	}
	return b.String()
}
