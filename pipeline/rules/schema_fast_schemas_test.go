package rules_test

import (
	"testing"

	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/rules"
)

// FuzzSchemaFastPathSchemas is FuzzSchemaFastPath with the schema fuzzed
// too (FuzzSchemaFastPath holds four schemas fixed): seeded with a schema
// per keyword and draft, and bodies of every JSON type, it holds the fast
// path's "valid" to the library's valid and its "invalid" to the
// library's invalid, whatever the schema the builder is given.
func FuzzSchemaFastPathSchemas(f *testing.F) {
	schemas := []string{
		`{"type":["integer","string"],"minimum":0.1,"maxLength":2}`,
		`{"enum":[1,"a",null,[1,2],{"a":1}],"const":1.0}`,
		`{"$schema":"http://json-schema.org/draft-07/schema#","definitions":{"x":{"type":"string"}},"properties":{"a":{"$ref":"#/definitions/x","type":"integer"}}}`,
		`{"$defs":{"x":{"type":"string"}},"properties":{"a":{"$ref":"#/$defs/x","minLength":3}}}`,
		`{"$schema":"http://json-schema.org/draft-04/schema#","properties":{"a":{"maximum":3,"exclusiveMaximum":true}},"dependencies":{"a":["b"],"c":{"required":["d"]}}}`,
		`{"$schema":"http://json-schema.org/draft-06/schema#","propertyNames":{"maxLength":2},"dependentRequired":{"a":["b"]}}`,
		`{"dependentSchemas":{"a":{"required":["z"]}},"dependentRequired":{"b":["c"]},"propertyNames":{"pattern":"^[a-c]+$"}}`,
		`{"patternProperties":{"^x":{"type":"number"}},"additionalProperties":false,"properties":{"y":true}}`,
		`{"$schema":"http://json-schema.org/draft-07/schema#","items":[{"type":"string"},{"type":"number"}],"additionalItems":false}`,
		`{"$schema":"http://json-schema.org/draft-07/schema#","additionalItems":false}`,
		`{"prefixItems":[{"type":"string"}],"items":{"type":"number"},"contains":{"const":2},"minContains":2,"maxContains":3}`,
		`{"$schema":"http://json-schema.org/draft-07/schema#","contains":{"type":"string"},"uniqueItems":true,"maxItems":4}`,
		`{"uniqueItems":true}`,
		`{"multipleOf":3,"exclusiveMinimum":-1e3,"maximum":9007199254740993}`,
		`{"multipleOf":0.1}`,
		`{"if":{"properties":{"a":{"const":1}}},"then":{"required":["b"]},"else":{"not":{"required":["c"]}}}`,
		`{"oneOf":[{"type":"number"},{"type":"integer"}],"anyOf":[{"minimum":2},{"maxLength":1}],"allOf":[{"not":{"type":"null"}}]}`,
		`{"$schema":"http://json-schema.org/draft-07/schema#","format":"email"}`,
		`{"format":"date-time"}`,
		`{"$schema":"http://json-schema.org/draft-07/schema#","properties":{"d":{"format":"date"},"i":{"format":"ipv4"},"r":{"format":"regex"}}}`,
		`{"$defs":{"n":{"type":"object","properties":{"k":{"type":"array","items":{"$ref":"#/$defs/n"}}},"additionalProperties":{"type":"integer"}}},"$ref":"#/$defs/n"}`,
		`{"$schema":"https://json-schema.org/draft/2019-09/schema","$defs":{"x":{"minimum":1}},"$ref":"#/$defs/x","maximum":5,"items":{"minimum":0}}`,
		`{"minProperties":1,"maxProperties":2,"required":["a"]}`,
		`{"const":{"a":[1,{"b":null}]}}`,
		`{"enum":[0.1,1e400,-0,12345678901234567890]}`,
		`false`, `true`, `{"not":true}`,
	}
	docs := []string{`1`, `1.0`, `0.1`, `"ab"`, `null`, `[1,2]`, `{"a":1}`, `{"a":1,"b":2}`, `[2,2,"x"]`, `{"x1":1,"y":{}}`,
		`"2024-01-01T00:00:00Z"`, `"a@b.c"`, `{"k":[{"k":[]},{"z":1}]}`, `9007199254740993`, `[1,"a",null,[1,2],{"a":1}]`, `-0`, `{"d":"2024-02-30","i":"1.2.3.4","r":"["}`}
	for _, s := range schemas {
		for _, d := range docs {
			f.Add([]byte(s), []byte(d))
		}
	}
	f.Fuzz(func(t *testing.T, schema, body []byte) {
		if len(schema) > 600 || len(body) > 600 {
			return // small enough that the library's own cost stays small
		}
		s, err := rules.CompileSchema("fuzz", schema)
		if err != nil {
			return
		}
		doc, err := ingest.Decode(body)
		if err != nil {
			return
		}
		got := s.FastVerdict(doc)
		lib := s.LibraryValid(doc)
		if got == "valid" && !lib || got == "invalid" && lib {
			t.Fatalf("schema %s doc %s: fast path %s, library valid = %v", schema, body, got, lib)
		}
	})
}
