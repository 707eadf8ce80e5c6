package rules

import "testing"

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
