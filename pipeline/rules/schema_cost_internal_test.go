package rules

import (
	"slices"
	"testing"
)

// TestSchemaCostAnchorsNoFieldLeadsTo: the subschema the library's
// $dynamicRef resolves to in the generic-list pattern is one no exported
// field leads to, so the walk must find it in the document: without the
// document (schemaDoc{}) it counts a body nested 30 levels within the
// budget, which with it is refused (schema_cost_test.go holds the walk to
// the library's work on that schema).
func TestSchemaCostAnchorsNoFieldLeadsTo(t *testing.T) {
	const schema = `{"$ref": "list", "$defs": {
	  "list": {"$id": "list", "type": "array", "items": {"$dynamicRef": "#content"},
	    "$defs": {"content": {"$dynamicAnchor": "content", "not": true}}},
	  "node": {"$dynamicAnchor": "content", "type": "object", "oneOf": [
	    {"properties": {"next": {"$ref": "#/$defs/node"}}}, {"properties": {"next": {"$ref": "#/$defs/node"}}}]}}}`
	s, err := CompileSchema("list", []byte(schema))
	if err != nil {
		t.Fatal(err)
	}
	var doc any = map[string]any{}
	for range 30 {
		doc = map[string]any{"next": doc}
	}
	doc = []any{doc}
	if n, ok := newCostPlan(s.sch, nil, schemaDoc{}).count(doc, baseCost, nil); !ok {
		t.Fatalf("without the document the walk counts %d, over the budget: the premise does not hold", n)
	}
	if n, ok := s.cost.count(doc, baseCost, nil); ok {
		t.Errorf("the walk counts %d, within the budget", n)
	}
}

// TestSchemaCostAnchorsByResource: the walk knows whose resource each
// anchor is where the document says (the generic list: exact), and
// counts the most any of them costs where it does not (an anchor under
// an unknown keyword).
func TestSchemaCostAnchorsByResource(t *testing.T) {
	for _, c := range []struct {
		schema string
		exact  bool
	}{
		{`{"$ref": "list", "$defs": {"list": {"$id": "list", "items": {"$dynamicRef": "#c"}, "$defs": {"c": {"$dynamicAnchor": "c"}}},
		  "c": {"$dynamicAnchor": "c", "type": "string"}}}`, true},
		{`{"$ref": "#/x-ext/n", "x-ext": {"n": {"$dynamicAnchor": "n", "items": {"$dynamicRef": "#n"}}}}`, false},
	} {
		s, err := CompileSchema("anchors", []byte(c.schema))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, n := range allNodes(s.cost.root) {
			if n.anchors != nil {
				found = true
				if exact := n.anchors.in != nil; exact != c.exact || len(n.anchors.all) == 0 {
					t.Errorf("%s: anchors %d, by resource %v; want by resource %v", c.schema, len(n.anchors.all), exact, c.exact)
				}
			}
		}
		if !found {
			t.Errorf("%s: no $dynamicRef with an anchor", c.schema)
		}
	}
}

// allNodes are the nodes reachable from n by $ref, $dynamicRef and items.
func allNodes(n *costNode) []*costNode {
	var out []*costNode
	var walk func(n *costNode)
	walk = func(n *costNode) {
		if n == nil || slices.Contains(out, n) {
			return
		}
		out = append(out, n)
		walk(n.ref)
		walk(n.dynamicRef)
		walk(n.items)
	}
	walk(n)
	return out
}
