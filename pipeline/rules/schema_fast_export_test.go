package rules

// FastVerdict is the fast path's answer for doc: "valid", "invalid",
// "maybe", or "none" when the schema has no fast path.
func (s *Schema) FastVerdict(doc any) string {
	if s.fast == nil {
		return "none"
	}
	return [...]string{maybe: "maybe", valid: "valid", invalid: "invalid"}[s.fast.verdict(doc)]
}

// LibraryValid reports whether the library alone finds doc valid.
func (s *Schema) LibraryValid(doc any) bool { return s.sch.Validate(doc) == nil }

// WithoutFastPath returns s validating with the library alone, as
// Validate did before the fast path.
func (s *Schema) WithoutFastPath() *Schema {
	c := *s
	c.fast = nil
	return &c
}
