package rules

// FastVerdict is the fast path's answer for doc: "valid", "invalid",
// "maybe", or "none" when the schema has no fast path.
func (s *Schema) FastVerdict(doc any) string {
	if s.fast == nil {
		return "none"
	}
	return [...]string{maybe: "maybe", valid: "valid", invalid: "invalid"}[s.fast.verdict(doc)]
}

// FastChecks is the number of subschema checks the fast path's walk of
// doc makes (those it refuses past maxChecks included: each costs a
// decrement), as Validate walks it; 0 when the schema has no fast path.
func (s *Schema) FastChecks(doc any) int {
	if s.fast == nil {
		return 0
	}
	w := walk{left: maxChecks}
	s.fast.check(doc, &w)
	return maxChecks - w.left
}

// LibraryValid reports whether the library alone finds doc valid.
func (s *Schema) LibraryValid(doc any) bool { return s.sch.Validate(doc) == nil }

// WithoutFastPath returns s validating with the library alone, as
// Validate did before the fast path (and before the cost bound).
func (s *Schema) WithoutFastPath() *Schema {
	c := *s
	c.fast, c.cost = nil, nil
	return &c
}

// WithoutCostBound returns s validating as Validate did before the cost
// bound: the fast path, then the library.
func (s *Schema) WithoutCostBound() *Schema {
	c := *s
	c.cost = nil
	return &c
}

// Cost is what the cost walk counts for doc, in units of the library's
// work, with a budget of budget units, and whether it stayed within it.
func (s *Schema) Cost(doc any, budget int) (int, bool) {
	return s.cost.count(doc, budget, nil)
}

// LinearCost is doc's linear cost (see costPlan.count), up to budget.
func (s *Schema) LinearCost(doc any, budget int) (int, bool) {
	return s.cost.count(doc, budget, map[pairKey]struct{}{})
}

// CostWithin is the cost bound's answer for doc (false: too complex).
func (s *Schema) CostWithin(doc any) bool {
	_, ok := s.cost.within(doc)
	return ok
}

// SinglePath reports whether no value can be reached along two paths of
// the schema, so that the cost bound has nothing to walk.
func (s *Schema) SinglePath() bool { return s.cost.single }

// BaseCost is the budget every body has.
const BaseCost = baseCost
