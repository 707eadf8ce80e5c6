package rules_test

import (
	"strings"
	"testing"
	"time"
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
func TestSchemaFastPathCostIsBounded(t *testing.T) {
	s := compileSchema(t, []byte(costSchema))
	doc := decode(t, costBody(26)) // 53 levels of JSON: ingest takes up to 128
	start := time.Now()
	if v := s.WithoutFastPath().Validate(doc); v != nil {
		t.Fatalf("the library alone: Validate = %q, want valid", v)
	}
	lib := time.Since(start)
	start = time.Now()
	if v := s.Validate(doc); v != nil {
		t.Fatalf("Validate = %q, want valid", v)
	}
	// Without a bound on the walk this takes tens of seconds.
	if d := time.Since(start); d > 100*lib+time.Second {
		t.Errorf("Validate took %v, the library alone %v", d, lib)
	}
}
