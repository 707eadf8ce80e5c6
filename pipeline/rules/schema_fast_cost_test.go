package rules_test

import (
	"strings"
	"testing"
)

// costSchema is a tree whose nodes are either of two variants that both
// go on into the children (anyOf); the first one's tags are unique.
const costSchema = `{
  "$defs": {
    "a": {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": true},
          "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}},
    "b": {"type": "object", "properties": {"tags": {"type": "array"},
          "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}},
    "node": {"anyOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/b"}]}
  },
  "$ref": "#/$defs/node"
}`

// costBody nests depth nodes, each with 21 distinct tags: more than the
// fast path decides uniqueItems for, so it is unsure of variant a at every
// level and walks variant b too, where the library stops at a.
func costBody(depth int) string {
	tags := make([]string, 21)
	for i := range tags {
		tags[i] = `"t` + string(rune('a'+i)) + `"`
	}
	node := `{"tags":[` + strings.Join(tags, ",") + `],"kids":[`
	return strings.Repeat(node, depth) + `{}` + strings.Repeat(`]}`, depth)
}

// TestSchemaFastPathCostIsBounded: a hostile body costs Validate about
// what it costs the library, not 2^depth walks of the fast path (P9).
// Held in counts, not time (a loaded machine slows both sides, and a
// clock flaked): the fast path's checks are counted by its walk, and the
// library's work by the cost walk's linear count (each (subschema, value)
// pair the library reaches, once), its work on a schema without
// alternatives. A fast-path check costs less than a library unit (on this
// body, 47 ns against 100 ns on the 2-core development machine), so 100
// checks a unit is within the old bound of 100 times the library's time.
func TestSchemaFastPathCostIsBounded(t *testing.T) {
	s := compileSchema(t, []byte(costSchema))
	// The premise: without a bound the walk doubles with every level of
	// the body (it walks both variants of each node), while the library's
	// work grows by a constant.
	prev, prevLib, step := 0, 0, 0
	for depth := 4; depth <= 10; depth++ {
		doc := decode(t, costBody(depth))
		checks := s.FastChecks(doc)
		lib, ok := s.LinearCost(doc, 1<<22)
		if !ok {
			t.Fatalf("premise: depth %d: the linear cost passed 2^22", depth)
		}
		if step == 0 && prevLib > 0 {
			step = lib - prevLib
		}
		if prev > 0 && (checks < 2*prev || lib-prevLib != step) {
			t.Fatalf("premise: depth %d: %d fast-path checks after %d, library work %d after %d; want the checks to double, the library's to grow by %d a level",
				depth, checks, prev, lib, prevLib, step)
		}
		prev, prevLib = checks, lib
	}
	doc := decode(t, costBody(26)) // 53 levels of JSON: ingest takes up to 128
	if v := s.WithoutFastPath().Validate(doc); v != nil {
		t.Fatalf("the library alone: Validate = %q, want valid", v)
	}
	if v := s.Validate(doc); v != nil {
		t.Fatalf("Validate = %q, want valid", v)
	}
	checks := s.FastChecks(doc)
	lib, ok := s.LinearCost(doc, 1<<22)
	if !ok {
		t.Fatal("premise: the linear cost passed 2^22")
	}
	t.Logf("depth 26: %d fast-path checks, library work %d units", checks, lib)
	// Without a bound on the walk this is 2^27 checks (tens of seconds).
	if checks > 100*lib {
		t.Errorf("the fast path made %d checks for a body the library does in %d units of work, want at most 100 a unit", checks, lib)
	}
}
