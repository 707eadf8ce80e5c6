package rules_test

import (
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/rules"
)

// nestedOneOf is a schema whose oneOf has two branches that both go on
// into the same member: the library checks both at every level, 2^depth
// checks for a body nested depth levels deep.
const nestedOneOf = `{
  "$defs": {"node": {"type": "object", "oneOf": [
    {"properties": {"kind": {"const": "a"}, "next": {"$ref": "#/$defs/node"}}},
    {"properties": {"kind": {"const": "b"}, "next": {"$ref": "#/$defs/node"}}}]}},
  "$ref": "#/$defs/node"
}`

// nested is a body of depth objects, each the "next" of the one before.
func nested(depth int) string {
	return strings.Repeat(`{"next":`, depth) + `{}` + strings.Repeat(`}`, depth)
}

// TestSchemaCheckRefusesNestedOneOf: a body nested 20 to 30 levels under
// a nested oneOf is refused as too complex, without the library (which
// would take seconds to hours: its work doubles with every level).
func TestSchemaCheckRefusesNestedOneOf(t *testing.T) {
	s := compileSchema(t, []byte(nestedOneOf))
	lib := s.WithoutFastPath()

	// The premise: the library's own work doubles with each level (its
	// allocations, an exact count, on bodies small enough to run), and so
	// does the walk's count, while the linear cost grows by a constant.
	allocs := func(depth int) float64 {
		doc := decode(t, nested(depth))
		return testing.AllocsPerRun(2, func() { lib.Validate(doc) })
	}
	for depth := 6; depth <= 9; depth++ {
		if a, b := allocs(depth), allocs(depth+1); b < 1.7*a {
			t.Errorf("library allocations: %v at depth %d, %v at %d: not doubling", a, depth, b, depth+1)
		}
		c1, _ := s.Cost(decode(t, nested(depth)), 1<<30)
		c2, _ := s.Cost(decode(t, nested(depth+1)), 1<<30)
		if c2 < 2*c1 {
			t.Errorf("cost: %d at depth %d, %d at %d: not doubling", c1, depth, c2, depth+1)
		}
		l1, _ := s.LinearCost(decode(t, nested(depth)), 1<<30)
		l2, _ := s.LinearCost(decode(t, nested(depth+1)), 1<<30)
		if l2-l1 > 20 {
			t.Errorf("linear cost: %d at depth %d, %d at %d: not linear", l1, depth, l2, depth+1)
		}
	}
	if c, ok := s.Cost(decode(t, nested(20)), rules.BaseCost); ok {
		t.Fatalf("depth 20 costs %d, within the budget of %d: the test needs a deeper body", c, rules.BaseCost)
	}

	for _, depth := range []int{20, 25, 30, 120} {
		doc := decode(t, nested(depth))
		v, err := s.Check(doc)
		if !errors.Is(err, rules.ErrTooComplex) || v != nil {
			t.Errorf("depth %d: Check = %q, %v; want ErrTooComplex", depth, v, err)
		}
		var ce *rules.ComplexityError
		if !errors.As(err, &ce) || ce.Budget < rules.BaseCost {
			t.Errorf("depth %d: error %v is no ComplexityError with the budget", depth, err)
		}
		got := s.Validate(doc)
		if len(got) != 1 || !strings.HasPrefix(got[0], "(root): body too complex to check against the schema: ") {
			t.Errorf("depth %d: Validate = %q", depth, got)
		}
	}

	// Within the budget, the library's answer.
	for depth := range 9 {
		doc := decode(t, nested(depth))
		v, err := s.Check(doc)
		if want := lib.Validate(doc); err != nil || !slices.Equal(v, want) {
			t.Errorf("depth %d: Check = %q, %v; the library %q", depth, v, err, want)
		}
	}
}

// TestSchemaCheckSinglePath: the CallKaro schema (no alternatives) is
// never walked, and a schema is not taken for one when a value can be
// reached along two paths.
func TestSchemaCheckSinglePath(t *testing.T) {
	if s := compileSchema(t, readTestdata(t, "testdata/schemas/callkaro.schema.json")); !s.SinglePath() {
		t.Error("the CallKaro schema is not single-path")
	}
	objects := strings.Repeat(`{"a":`, 30) + `{}` + strings.Repeat(`}`, 30)
	arrays := strings.Repeat(`[`, 30) + strings.Repeat(`]`, 30)
	for _, c := range []struct{ schema, body string }{
		{nestedOneOf, nested(30)},
		{`{"properties":{"a":{"$ref":"#"}},"patternProperties":{"^a":{"$ref":"#"}}}`, objects},
		{`{"$defs":{"n":{"properties":{"a":{"$ref":"#"}}}},"$ref":"#/$defs/n","properties":{"a":{"$ref":"#"}}}`, objects},
		{`{"items":{"$ref":"#"},"contains":{"$ref":"#"}}`, arrays},
		{`{"if":{"items":{"$ref":"#"}},"then":{"items":{"$ref":"#"}}}`, arrays},
	} {
		s := compileSchema(t, []byte(c.schema))
		if s.SinglePath() {
			t.Errorf("%s is taken for single-path", c.schema)
		}
		// The premise: a body nested 30 levels is costly under each.
		if n, ok := s.Cost(decode(t, c.body), 1<<20); ok {
			t.Errorf("%s: a nested body costs only %d", c.schema, n)
		}
	}
	s := compileSchema(t, []byte(`{"properties":{"a":{"$ref":"#"}},"items":{"$ref":"#"}}`))
	if !s.SinglePath() {
		t.Error("a plain recursive schema is not single-path")
	}
}

// TestSchemaCheckBigPlainBody: a body over the fixed budget whose cost is
// linear (each subschema meets each value once) gets the library's
// answer: the budget does not refuse bodies for being big.
func TestSchemaCheckBigPlainBody(t *testing.T) {
	s := compileSchema(t, []byte(`{"type":"array","items":{"anyOf":[{"type":"string"},{"type":"number"}]}}`))
	for _, last := range []string{`1`, `null`} {
		doc := decode(t, `[`+strings.Repeat(`1,`, 100_000)+last+`]`)
		if c, ok := s.Cost(doc, rules.BaseCost); ok {
			t.Fatalf("the body costs %d, within the fixed budget: the test needs a bigger one", c)
		}
		v, err := s.Check(doc)
		if want := s.WithoutFastPath().Validate(doc); err != nil || !slices.Equal(v, want) {
			t.Errorf("last item %s: Check = %q, %v; the library %q", last, v, err, want)
		}
	}
}

// TestSchemaCheckWideNestedOneOf: many shallow nestings, each within the
// budget, add up: the library goes through the values several times each,
// and the body is refused although its linear cost is over the fixed
// budget.
func TestSchemaCheckWideNestedOneOf(t *testing.T) {
	s := compileSchema(t, []byte(`{"type":"array","items":`+strings.ReplaceAll(nestedOneOf, `"#/$defs/node"`, `"#/items/$defs/node"`)+`}`))
	one := nested(4)
	doc := decode(t, `[`+strings.Repeat(one+`,`, 10_000)+one+`]`)
	linear, _ := s.LinearCost(doc, 1<<30)
	if c, _ := s.Cost(doc, 1<<30); c < 2*linear || linear < rules.BaseCost {
		t.Fatalf("the body costs %d, its linear cost %d: not the premise", c, linear)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := s.Check(doc)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, rules.ErrTooComplex) {
		t.Errorf("Check = %v, want ErrTooComplex", err)
	}
	// What the walks allocate (the pairs the linear walk remembers) is
	// bounded: 5 MB here, about 40 MB at most (maxPairs).
	if got := after.TotalAlloc - before.TotalAlloc; got > 32<<20 {
		t.Errorf("Check allocated %d bytes", got)
	}
}

// TestSchemaCheckDynamicRefs: schemas with $dynamicRef and $recursiveRef
// (whose targets depend on where the walk came from) get the library's
// answer within the budget, and a nested alternative under them is
// refused.
func TestSchemaCheckDynamicRefs(t *testing.T) {
	for _, c := range []struct{ name, schema string }{
		{"dynamicRef", `{"$dynamicAnchor":"node","type":"object","oneOf":[
			{"properties":{"kind":{"const":"a"},"next":{"$dynamicRef":"#node"}}},
			{"properties":{"kind":{"const":"b"},"next":{"$dynamicRef":"#node"}}}]}`},
		{"recursiveRef", `{"$schema":"https://json-schema.org/draft/2019-09/schema","$recursiveAnchor":true,"type":"object","oneOf":[
			{"properties":{"kind":{"const":"a"},"next":{"$recursiveRef":"#"}}},
			{"properties":{"kind":{"const":"b"},"next":{"$recursiveRef":"#"}}}]}`},
		{"unevaluated", `{"$defs":{"n":{"type":"object","anyOf":[
			{"properties":{"kind":{"const":"a"},"next":{"$ref":"#/$defs/n"}}},
			{"properties":{"kind":{"const":"b"},"next":{"$ref":"#/$defs/n"}}}],"unevaluatedProperties":false}},"$ref":"#/$defs/n"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := compileSchema(t, []byte(c.schema))
			for depth := range 8 {
				for _, body := range []string{nested(depth), strings.Replace(nested(depth), `{}`, `{"kind":"a"}`, 1)} {
					doc := decode(t, body)
					v, err := s.Check(doc)
					if want := s.WithoutFastPath().Validate(doc); err != nil || !slices.Equal(v, want) {
						t.Errorf("%s: Check = %q, %v; the library %q", body, v, err, want)
					}
				}
			}
			if _, err := s.Check(decode(t, nested(40))); !errors.Is(err, rules.ErrTooComplex) {
				t.Errorf("depth 40: Check = %v, want ErrTooComplex", err)
			}
		})
	}
}

// listOfContent is the draft 2020-12 pattern of a generic list whose items
// a schema that uses it fills in: the list's items are a $dynamicRef to
// "content", which the root's resource defines on a $defs entry that no
// keyword references (the library finds it among the resource's anchors,
// which it does not export). Here that entry is a nested oneOf.
const listOfContent = `{
  "$ref": "list",
  "$defs": {
    "list": {"$id": "list", "type": "array", "items": {"$dynamicRef": "#content"},
      "$defs": {"content": {"$dynamicAnchor": "content", "not": true}}},
    "node": {"$dynamicAnchor": "content", "type": "object", "oneOf": [
      {"properties": {"kind": {"const": "a"}, "next": {"$ref": "#/$defs/node"}}},
      {"properties": {"kind": {"const": "b"}, "next": {"$ref": "#/$defs/node"}}}]}
  }
}`

// recursiveInside is a draft 2019-09 schema whose root has no
// $recursiveAnchor and enters a resource that has one below its root: the
// library's $recursiveRef then goes to the subschema it entered ($defs/x,
// whose resource is r), not to the $recursiveRef's target (r itself,
// which costs one check).
const recursiveInside = `{
  "$schema": "https://json-schema.org/draft/2019-09/schema",
  "$ref": "r#/$defs/x",
  "$defs": {"r": {"$id": "r", "$recursiveAnchor": true, "type": "object",
    "$defs": {"x": {"type": "object", "oneOf": [
      {"properties": {"kind": {"const": "a"}, "next": {"$recursiveRef": "#"}}},
      {"properties": {"kind": {"const": "b"}, "next": {"$recursiveRef": "#"}}}]}}}}
}`

// metaPattern is the draft 2020-12 meta-schema's pattern, small: a root
// with $dynamicAnchor "meta" made of vocabularies, each a resource with
// the same anchor, whose subschema keywords are $dynamicRef "#meta".
const metaPattern = `{
  "$dynamicAnchor": "meta",
  "allOf": [{"$ref": "core"}, {"$ref": "applicator"}, {"$ref": "validation"}],
  "$defs": {
    "core": {"$id": "core", "$dynamicAnchor": "meta", "type": ["object", "boolean"], "properties": {
      "$id": {"type": "string"}, "$ref": {"type": "string"},
      "$defs": {"type": "object", "additionalProperties": {"$dynamicRef": "#meta"}}}},
    "applicator": {"$id": "applicator", "$dynamicAnchor": "meta", "type": ["object", "boolean"], "properties": {
      "properties": {"type": "object", "additionalProperties": {"$dynamicRef": "#meta"}},
      "items": {"$dynamicRef": "#meta"}, "not": {"$dynamicRef": "#meta"},
      "allOf": {"type": "array", "items": {"$dynamicRef": "#meta"}},
      "anyOf": {"type": "array", "items": {"$dynamicRef": "#meta"}},
      "oneOf": {"type": "array", "items": {"$dynamicRef": "#meta"}}}},
    "validation": {"$id": "validation", "$dynamicAnchor": "meta", "type": ["object", "boolean"], "properties": {
      "type": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
      "required": {"type": "array", "items": {"type": "string"}},
      "enum": {"type": "array"}, "minimum": {"type": "number"}, "maxLength": {"type": "integer"}}}
  }
}`

// anchorInExtension has its dynamic anchor under an unknown keyword that
// a $ref points into: the document does not say whose resource's anchor
// it is, and the walk counts the most any subschema with the anchor costs.
const anchorInExtension = `{"$ref": "#/x-ext/node", "x-ext": {"node": {"$dynamicAnchor": "node", "type": "object", "oneOf": [
  {"properties": {"kind": {"const": "a"}, "next": {"$dynamicRef": "#node"}}},
  {"properties": {"kind": {"const": "b"}, "next": {"$dynamicRef": "#node"}}}]}}}`

// TestSchemaCheckDynamicTargets: where the library's $dynamicRef or
// $recursiveRef goes is not its target, nor any subschema an exported
// field leads to, the walk still counts what the library does there: its
// work doubles with each level, the count too, and a deep body is
// refused; a shallow one gets the library's answer.
func TestSchemaCheckDynamicTargets(t *testing.T) {
	for _, c := range []struct{ name, schema, body string }{
		{"dynamicRef", listOfContent, "[" + nested(30) + "]"},
		{"recursiveRef", recursiveInside, nested(30)},
		{"extension", anchorInExtension, nested(30)},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := compileSchema(t, []byte(c.schema))
			lib := s.WithoutFastPath()
			body := func(depth int) any {
				if c.name == "dynamicRef" {
					return decode(t, "["+nested(depth)+"]")
				}
				return decode(t, nested(depth))
			}
			for depth := 6; depth <= 8; depth++ {
				allocs := func(d int) float64 { return testing.AllocsPerRun(2, func() { lib.Validate(body(d)) }) }
				if a, b := allocs(depth), allocs(depth+1); b < 1.7*a {
					t.Errorf("library allocations: %v at depth %d, %v at %d: not doubling", a, depth, b, depth+1)
				}
				c1, _ := s.Cost(body(depth), 1<<30)
				c2, _ := s.Cost(body(depth+1), 1<<30)
				if c2 < 2*c1 {
					t.Errorf("cost: %d at depth %d, %d at %d: not doubling", c1, depth, c2, depth+1)
				}
			}
			if _, err := s.Check(decode(t, c.body)); !errors.Is(err, rules.ErrTooComplex) {
				t.Errorf("depth 30: Check = %v, want ErrTooComplex", err)
			}
			for depth := range 8 {
				doc := body(depth)
				v, err := s.Check(doc)
				if want := lib.Validate(doc); err != nil || !slices.Equal(v, want) {
					t.Errorf("depth %d: Check = %q, %v; the library %q", depth, v, err, want)
				}
			}
		})
	}
}

// TestSchemaCheckMetaSchemaPattern: under the draft 2020-12 meta-schema's
// pattern, with the anchor on the root or on a resource the root refers
// to, a schema (the CallKaro one, and one nested 20 levels) gets the
// library's answer, and costs about what the library does: each value
// once (within 5% of the linear cost).
func TestSchemaCheckMetaSchemaPattern(t *testing.T) {
	wrapped := `{"$ref": "meta", "$defs": {"meta": ` +
		strings.Replace(metaPattern, `"$dynamicAnchor": "meta",`, `"$id": "meta", "$dynamicAnchor": "meta",`, 1) + `}}`
	bodies := []string{string(readTestdata(t, "testdata/schemas/callkaro.schema.json")),
		strings.Repeat(`{"type": "object", "properties": {"a": `, 20) + `{"type": "string"}` + strings.Repeat(`}}`, 20),
		`{"properties": {"a": {"type": 1}}}`}
	for name, schema := range map[string]string{"anchored": metaPattern, "wrapped": wrapped} {
		s := compileSchema(t, []byte(schema))
		for _, b := range bodies {
			doc := decode(t, b)
			v, err := s.Check(doc)
			if want := s.WithoutFastPath().Validate(doc); err != nil || !slices.Equal(v, want) {
				t.Errorf("%s: Check = %q, %v; the library %q", name, v, err, want)
			}
			c, _ := s.Cost(doc, 1<<30)
			if l, _ := s.LinearCost(doc, 1<<30); c > l+l/20 {
				t.Errorf("%s: the walk counts %d, the linear cost is %d", name, c, l)
			}
		}
	}
}

// FuzzSchemaCheck holds Check to the library: for a schema and a body
// whose cost the walk finds within the budget, Check's answer is the
// library's alone. A body it refuses is never given to the library, so a
// walk that undercounted would show as a slow input here.
func FuzzSchemaCheck(f *testing.F) {
	schemas := []string{
		nestedOneOf,
		`{"$defs":{"n":{"anyOf":[{"type":"object","properties":{"t":{"uniqueItems":true},"k":{"items":{"$ref":"#/$defs/n"}}}},
			{"type":"object","properties":{"k":{"items":{"$ref":"#/$defs/n"}}}}]}},"$ref":"#/$defs/n"}`,
		`{"if":{"properties":{"a":{"const":1}}},"then":{"properties":{"n":{"$ref":"#"}}},"else":{"properties":{"n":{"$ref":"#"}}}}`,
		`{"$dynamicAnchor":"n","oneOf":[{"properties":{"x":{"$dynamicRef":"#n"}}},{"properties":{"x":{"$dynamicRef":"#n"}}}]}`,
		`{"$schema":"https://json-schema.org/draft/2019-09/schema","$recursiveAnchor":true,"anyOf":[{"items":{"$recursiveRef":"#"}},{"items":{"$recursiveRef":"#"}}]}`,
		`{"allOf":[{"$ref":"#/$defs/a"},{"$ref":"#/$defs/a"}],"$defs":{"a":{"properties":{"x":{"$ref":"#"}}}},"unevaluatedProperties":false}`,
		`{"$schema":"http://json-schema.org/draft-07/schema#","definitions":{"a":{"oneOf":[{"$ref":"#"},{"type":"string"}]}},"items":{"$ref":"#/definitions/a"},"dependencies":{"a":{"$ref":"#"}}}`,
		`{"propertyNames":{"$ref":"#/$defs/s"},"$defs":{"s":{"anyOf":[{"pattern":"^a"},{"maxLength":2}]}},"additionalProperties":{"$ref":"#"}}`,
		`{"$ref":"#"}`,
		`{"not":{"$ref":"#/$defs/x"},"$defs":{"x":{"not":{"$ref":"#"}}}}`,
		`{"prefixItems":[{"$ref":"#"}],"contains":{"$ref":"#"},"uniqueItems":true}`,
		listOfContent,
		recursiveInside,
		metaPattern,
		anchorInExtension,
	}
	docs := []string{`1`, `"a"`, `null`, `[]`, `{}`, nested(3), nested(9), `{"a":1,"n":{"a":2,"n":{"a":1}}}`, `[[[[[["x"]]]]],[1,1]]`,
		`{"x":{"x":{"x":{"x":{"x":{"x":{}}}}}}}`, `{"t":[1,1],"k":[{"t":[2],"k":[{"k":[]}]}]}`, `{"ab":{"a":{"abc":1}}}`}
	for _, s := range schemas {
		for _, d := range docs {
			f.Add([]byte(s), []byte(d))
		}
	}
	f.Fuzz(func(t *testing.T, schema, body []byte) {
		if len(schema) > 1000 || len(body) > 1000 {
			return
		}
		s, err := rules.CompileSchema("fuzz", schema)
		if err != nil {
			return
		}
		doc, err := ingest.Decode(body)
		if err != nil {
			return
		}
		if s.SinglePath() {
			// The claim that lets Check skip the walk: each pair once.
			c, _ := s.Cost(doc, 1<<24)
			if l, _ := s.LinearCost(doc, 1<<24); c != l {
				t.Fatalf("schema %s doc %s: single path, but the walk counts %d, the linear cost %d", schema, body, c, l)
			}
		}
		v, err := s.Check(doc)
		if err != nil {
			if !errors.Is(err, rules.ErrTooComplex) || v != nil {
				t.Fatalf("schema %s doc %s: Check = %q, %v", schema, body, v, err)
			}
			return
		}
		if want := s.WithoutFastPath().Validate(doc); !slices.Equal(v, want) {
			t.Fatalf("schema %s doc %s: Check = %q, the library alone %q", schema, body, v, want)
		}
	})
}

// BenchmarkSchemaCostWalk is the cost walk alone on the CallKaro payload,
// valid and invalid: what Validate would add to a body the fast path does
// not pass, before the library checks it, if the CallKaro schema had
// alternatives (it has none: Check does not walk; "within" is what it
// does instead).
func BenchmarkSchemaCostWalk(b *testing.B) {
	s := compileSchema(b, readTestdata(b, "testdata/schemas/callkaro.schema.json"))
	b.Run("within", func(b *testing.B) {
		doc := decode(b, string(withData(b, map[string]any{"call_duration": "12"})))
		b.ReportAllocs()
		for b.Loop() {
			if !s.CostWithin(doc) {
				b.Fatal("over the budget")
			}
		}
	})
	for _, c := range []struct {
		name string
		body []byte
	}{
		{"valid", readTestdata(b, "testdata/call_ended.json")},
		{"invalid", withData(b, map[string]any{"call_duration": "12"})},
	} {
		doc := decode(b, string(c.body))
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := s.Cost(doc, rules.BaseCost); !ok {
					b.Fatal("over the budget")
				}
			}
		})
	}
}
