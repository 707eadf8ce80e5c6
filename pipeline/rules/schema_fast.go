package rules

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/big"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The fast path of [Schema.Validate]. Nearly every body a source receives
// is valid, and for a valid body the library's answer is only "valid",
// yet it allocates about a hundred times to give it (its per-value state,
// a copy of every string it checks). A fastNode tree, built once from the
// library's compiled schema, walks the decoded document without
// allocating and answers whether the library would find it valid: valid,
// invalid, or maybe when it cannot tell. Validate trusts only "valid"; for
// anything else it runs the library, whose messages users see.
//
// Each keyword is decided exactly as the library's validator.go decides it
// (v6.0.3), and a subschema using anything else (unevaluatedProperties,
// $dynamicRef, $recursiveRef, content assertions, vocabulary extensions,
// an unknown draft) answers maybe. FuzzSchemaFastPath holds the two to
// the same answer.

// verdict is the fast path's answer for one value against one subschema.
type verdict int8

const (
	maybe   verdict = iota // cannot tell: ask the library
	valid                  // the library finds the value valid
	invalid                // the library finds the value invalid
)

// and is the verdict of two checks that must both pass.
func (a verdict) and(b verdict) verdict {
	switch {
	case a == invalid || b == invalid:
		return invalid
	case a == maybe || b == maybe:
		return maybe
	}
	return valid
}

// not is the verdict of "not": valid and invalid swap.
func (a verdict) not() verdict {
	switch a {
	case valid:
		return invalid
	case invalid:
		return valid
	}
	return maybe
}

// kinds is a set of JSON types, as "type" lists them.
type kinds uint8

const (
	kNull kinds = 1 << iota
	kBoolean
	kNumber
	kInteger // only in a schema's "type": a document's numbers are kNumber
	kString
	kArray
	kObject
)

// kindNames are the kinds by their names in "type".
var kindNames = map[string]kinds{"null": kNull, "boolean": kBoolean, "number": kNumber,
	"integer": kInteger, "string": kString, "array": kArray, "object": kObject}

// kindOf is the JSON type of v, a document value as [Schema.Validate]
// takes it or a schema value made by schemaValue; 0 for anything else
// (other Go types, NaN and infinities), which the library refuses or
// treats differently and the fast path leaves to it.
func kindOf(v any) kinds {
	switch v := v.(type) {
	case nil:
		return kNull
	case bool:
		return kBoolean
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return 0
		}
		return kNumber
	case num:
		return kNumber
	case string:
		return kString
	case []any:
		return kArray
	case map[string]any:
		return kObject
	}
	return 0
}

// bound is a number of the schema (minimum, maximum, exclusive*) as the
// library compares a document's float64 x with it: it compares the exact
// value r of the bound with the decimal that fmt.Sprint(x) writes (x's
// shortest representation), not with x itself. f is the float64 nearest
// to r. Rounding to nearest is monotonic, so x < f means Sprint(x) < r
// and x > f means Sprint(x) > r; when x == f, Sprint(x) is Sprint(f),
// compared with r once, when the schema is compiled: at.
type bound struct {
	f  float64
	at int
}

// newBound makes the bound of r; nil for nil.
func newBound(r *big.Rat) *bound {
	if r == nil {
		return nil
	}
	f, _ := r.Float64() // ±Inf beyond float64's range: every x is on one side
	b := &bound{f: f}
	if !math.IsInf(f, 0) {
		b.at = decimal(f).Cmp(r)
	}
	return b
}

// cmp compares Sprint(x) with the bound: -1, 0 or +1.
func (b *bound) cmp(x float64) int {
	switch {
	case x < b.f:
		return -1
	case x > b.f:
		return 1
	}
	return b.at
}

// decimal is the exact value of the decimal fmt.Sprint writes for a finite
// f, as the library reads numbers.
func decimal(f float64) *big.Rat {
	r, _ := new(big.Rat).SetString(fmt.Sprint(f))
	return r
}

// num is a number in a schema's const or enum: the library's equality
// compares Sprint(x) with its exact value, so a document's x equals it
// exactly when x is the float64 nearest to it and Sprint(x) is its value
// (see bound).
type num struct {
	f     float64
	exact bool
}

// schemaValue turns a const or enum value of the compiled schema (as
// jsonschema.UnmarshalJSON made it: json.Number for numbers) into what
// equal compares; false for anything else.
func schemaValue(v any) (any, bool) {
	switch v := v.(type) {
	case nil, bool, string:
		return v, true
	case json.Number:
		r, ok := new(big.Rat).SetString(string(v))
		if !ok {
			return nil, false
		}
		f, _ := r.Float64()
		return num{f: f, exact: !math.IsInf(f, 0) && decimal(f).Cmp(r) == 0}, true
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			var ok bool
			if out[i], ok = schemaValue(e); !ok {
				return nil, false
			}
		}
		return out, true
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			var ok bool
			if out[k], ok = schemaValue(e); !ok {
				return nil, false
			}
		}
		return out, true
	}
	return nil, false
}

// equal is the library's equality of a, a document value, and b, a
// document value or one made by schemaValue: numbers by value, arrays in
// order, objects by their members. ok is false when the library could
// instead fail on a value of no JSON type; the caller then answers maybe.
func equal(a, b any) (eq, ok bool) {
	ka, kb := kindOf(a), kindOf(b)
	switch {
	case ka == 0 || kb == 0:
		return false, false
	case ka != kb:
		return false, true
	}
	switch a := a.(type) {
	case nil:
		return true, true
	case bool:
		return a == b.(bool), true
	case string:
		return a == b.(string), true
	case float64:
		switch b := b.(type) {
		case float64:
			return a == b, true // Sprint is one-to-one on finite floats (0 and -0 both read as 0)
		case num:
			return a == b.f && b.exact, true
		}
	case []any:
		b := b.([]any)
		if len(a) != len(b) {
			return false, true
		}
		// The library stops at the first difference, in order.
		for i := range a {
			if eq, ok := equal(a[i], b[i]); !eq || !ok {
				return eq, ok
			}
		}
		return true, true
	case map[string]any:
		b := b.(map[string]any)
		if len(a) != len(b) {
			return false, true
		}
		// The library stops at the first difference in map order, which
		// is random: any member it could fail on makes the answer maybe.
		eq := true
		for k, va := range a {
			vb, found := b[k]
			if !found {
				eq = false
				continue
			}
			e, ok := equal(va, vb)
			if !ok {
				return false, false
			}
			eq = eq && e
		}
		return eq, true
	}
	return false, false
}

// fastNode is one subschema of the fast path: what of each keyword the
// library's validator looks at. Sizes are -1 when the keyword is absent.
type fastNode struct {
	// unknown: the subschema uses a keyword the fast path does not
	// decide; it answers maybe.
	unknown bool
	// fixed is a boolean schema's answer for every value (true: valid,
	// false: invalid); maybe for a schema object.
	fixed verdict

	types kinds
	// values are const (a list of one) and enum: v must equal one value
	// of each list.
	values [][]any
	format *jsonschema.Format
	ref    *fastNode
	// refOnly: a $ref of a draft before 2019-09, beside which the library
	// checks only type, const, enum and format.
	refOnly bool

	// cond, then and els are if, then and else.
	not, cond, then, els *fastNode
	allOf, anyOf, oneOf  []*fastNode

	minProperties, maxProperties int
	required                     []string
	dependencies                 []dependency
	properties                   map[string]*fastNode
	patternProperties            []patternProperty
	// additional checks the members that properties and
	// patternProperties do not name (false is a node that is always
	// invalid); nil when absent.
	additional    *fastNode
	propertyNames *fastNode

	minItems, maxItems int
	uniqueItems        bool
	// prefix checks the first items, one each; items the rest.
	prefix                   []*fastNode
	items                    *fastNode
	contains                 *fastNode
	minContains, maxContains int

	minLength, maxLength int
	pattern              jsonschema.Regexp

	minimum, maximum, exclusiveMinimum, exclusiveMaximum *bound
	// multipleOf is an integer multipleOf; inexact is set for one that
	// is not (an int64), for which numbers answer maybe.
	multipleOf int64
	inexact    bool
}

// dependency is what the presence of member name requires: other members
// (dependentRequired, or dependencies with a list) or that the object
// pass a schema (dependentSchemas, or dependencies with a schema).
type dependency struct {
	name     string
	required []string
	schema   *fastNode
}

// patternProperty is one patternProperties entry: members whose names
// match re are checked by node.
type patternProperty struct {
	re   jsonschema.Regexp
	node *fastNode
}

// newFastPath builds the fast path of a compiled schema; nil when it
// would only answer maybe, or when some subschema reaches itself without
// moving into the value (the library reports that cycle as an error).
// nodes are the nodes of every subschema (for the cost walk), nil when
// some subschema loops.
func newFastPath(sch *jsonschema.Schema) (root *fastNode, nodes map[*jsonschema.Schema]*fastNode) {
	b := fastBuilder{nodes: map[*jsonschema.Schema]*fastNode{}}
	root = b.node(sch)
	if b.loops() {
		return nil, nil
	}
	if root.unknown {
		return nil, b.nodes
	}
	return root, b.nodes
}

// fastBuilder builds fastNodes, one per subschema, so that references
// (recursive ones too) share them.
type fastBuilder struct {
	nodes map[*jsonschema.Schema]*fastNode
}

// node returns the node of s; nil for nil.
func (b *fastBuilder) node(s *jsonschema.Schema) *fastNode {
	if s == nil {
		return nil
	}
	if n, ok := b.nodes[s]; ok {
		return n
	}
	n := &fastNode{
		minProperties: -1, maxProperties: -1, minItems: -1, maxItems: -1,
		minContains: -1, maxContains: -1, minLength: -1, maxLength: -1,
	}
	b.nodes[s] = n
	if !b.fill(n, s) {
		*n = fastNode{unknown: true}
	}
	return n
}

// nodeOf is node for what the library keeps in an `any`: nil, a bool
// (true or false schema) or a *Schema; false for anything else.
func (b *fastBuilder) nodeOf(v any) (*fastNode, bool) {
	switch v := v.(type) {
	case nil:
		return nil, true
	case bool:
		if v {
			return &fastNode{fixed: valid}, true
		}
		return &fastNode{fixed: invalid}, true
	case *jsonschema.Schema:
		return b.node(v), true
	}
	return nil, false
}

// list is node for each of s.
func (b *fastBuilder) list(s []*jsonschema.Schema) []*fastNode {
	out := make([]*fastNode, len(s))
	for i, e := range s {
		out[i] = b.node(e)
	}
	return out
}

// fill sets n from s; false when s uses what the fast path does not
// decide.
func (b *fastBuilder) fill(n *fastNode, s *jsonschema.Schema) bool {
	if s.Bool != nil {
		n.fixed = invalid
		if *s.Bool {
			n.fixed = valid
		}
		return true
	}
	switch s.DraftVersion {
	case 4, 6, 7, 2019, 2020:
	default:
		return false
	}
	if s.RecursiveRef != nil || s.DynamicRef != nil || s.UnevaluatedProperties != nil ||
		s.UnevaluatedItems != nil || s.ContentEncoding != nil || s.ContentMediaType != nil ||
		s.ContentSchema != nil || len(s.Extensions) > 0 {
		return false
	}
	if s.Types != nil {
		for _, t := range s.Types.ToStrings() {
			n.types |= kindNames[t]
		}
	}
	if s.Const != nil {
		v, ok := schemaValue(*s.Const)
		if !ok {
			return false
		}
		n.values = append(n.values, []any{v})
	}
	if s.Enum != nil {
		v, ok := schemaValue(s.Enum.Values)
		if !ok {
			return false
		}
		n.values = append(n.values, v.([]any))
	}
	n.format = s.Format
	n.ref = b.node(s.Ref)
	if s.Ref != nil && s.DraftVersion < 2019 {
		n.refOnly = true
		return true
	}

	n.not, n.cond, n.then, n.els = b.node(s.Not), b.node(s.If), b.node(s.Then), b.node(s.Else)
	n.allOf, n.anyOf, n.oneOf = b.list(s.AllOf), b.list(s.AnyOf), b.list(s.OneOf)

	n.minProperties, n.maxProperties = size(s.MinProperties), size(s.MaxProperties)
	n.required = s.Required
	for name, dep := range s.Dependencies {
		switch dep := dep.(type) {
		case []string:
			n.dependencies = append(n.dependencies, dependency{name: name, required: dep})
		case *jsonschema.Schema:
			n.dependencies = append(n.dependencies, dependency{name: name, schema: b.node(dep)})
		default:
			return false
		}
	}
	if len(s.Properties) > 0 {
		n.properties = make(map[string]*fastNode, len(s.Properties))
		for name, p := range s.Properties {
			n.properties[name] = b.node(p)
		}
	}
	for re, p := range s.PatternProperties {
		n.patternProperties = append(n.patternProperties, patternProperty{re, b.node(p)})
	}
	var ok bool
	if n.additional, ok = b.nodeOf(s.AdditionalProperties); !ok {
		return false
	}
	// The library skips these in drafts that do not have them.
	if s.DraftVersion != 4 {
		n.propertyNames = b.node(s.PropertyNames)
	}
	if s.DraftVersion != 4 && s.DraftVersion != 6 {
		for name, p := range s.DependentSchemas {
			n.dependencies = append(n.dependencies, dependency{name: name, schema: b.node(p)})
		}
		for name, req := range s.DependentRequired {
			n.dependencies = append(n.dependencies, dependency{name: name, required: req})
		}
	}

	n.minItems, n.maxItems = size(s.MinItems), size(s.MaxItems)
	n.uniqueItems = s.UniqueItems
	if s.DraftVersion < 2020 {
		// items: one schema for all, or a list and then additionalItems.
		switch items := s.Items.(type) {
		case *jsonschema.Schema:
			n.items = b.node(items)
		case []*jsonschema.Schema, nil:
			list, _ := items.([]*jsonschema.Schema)
			n.prefix = b.list(list)
			if n.items, ok = b.nodeOf(s.AdditionalItems); !ok {
				return false
			}
		default:
			return false
		}
	} else {
		n.prefix, n.items = b.list(s.PrefixItems), b.node(s.Items2020)
	}
	if s.Contains != nil {
		n.contains = b.node(s.Contains)
		// Without minContains the library wants one match.
		n.minContains, n.maxContains = 1, size(s.MaxContains)
		if s.MinContains != nil {
			n.minContains = *s.MinContains
		}
	}

	n.minLength, n.maxLength = size(s.MinLength), size(s.MaxLength)
	n.pattern = s.Pattern

	n.minimum, n.maximum = newBound(s.Minimum), newBound(s.Maximum)
	n.exclusiveMinimum, n.exclusiveMaximum = newBound(s.ExclusiveMinimum), newBound(s.ExclusiveMaximum)
	if m := s.MultipleOf; m != nil {
		if m.IsInt() && m.Num().IsInt64() && m.Sign() > 0 {
			n.multipleOf = m.Num().Int64()
		} else {
			n.inexact = true
		}
	}
	return true
}

// size is a keyword's count, -1 when absent.
func size(p *int) int {
	if p == nil {
		return -1
	}
	return *p
}

// loops reports whether a node reaches itself through keywords that
// apply to the same value ($ref, not, if/then/else, allOf, anyOf, oneOf,
// dependencies): the library stops such a cycle with an error where the
// fast path would recurse forever.
func (b *fastBuilder) loops() bool {
	return cyclic(maps.Values(b.nodes), func(n *fastNode) []*fastNode {
		if n.unknown {
			return nil
		}
		next := append([]*fastNode{n.ref, n.not, n.cond, n.then, n.els}, n.allOf...)
		next = append(append(next, n.anyOf...), n.oneOf...)
		for _, d := range n.dependencies {
			next = append(next, d.schema)
		}
		return next
	})
}

// maxChecks bounds the subschema checks of one walk. The walk goes on
// through a subschema it is unsure of (maybe) where the library, finding
// it valid, stops: an anyOf whose branches both go deeper into the value
// is then walked twice at every level, 2^depth checks for a nested body
// that the library checks in linear time. Past the bound the walk answers
// maybe and the library decides (P9). A CallKaro body takes about a
// hundred checks.
const maxChecks = 1 << 16

// walk is what one walk of a document has left of maxChecks.
type walk struct{ left int }

// verdict is the fast path's answer for doc, within maxChecks.
func (n *fastNode) verdict(doc any) verdict {
	w := walk{left: maxChecks}
	return n.check(doc, &w)
}

// check is the verdict for v, a document value, in the order of the
// library's validate.
func (n *fastNode) check(v any, w *walk) verdict {
	if w.left--; w.left < 0 {
		return maybe
	}
	switch {
	case n.unknown:
		return maybe
	case n.fixed != maybe:
		return n.fixed
	}
	k := kindOf(v)
	if k == 0 {
		return maybe
	}
	if n.types != 0 && n.types&k == 0 {
		if n.types&kInteger == 0 || k != kNumber || !integral(v.(float64)) {
			return invalid
		}
	}
	r := valid
	for _, values := range n.values {
		if r = r.and(oneOfValues(v, values)); r == invalid {
			return invalid
		}
	}
	if n.format != nil && n.format.Validate(v) != nil {
		return invalid
	}
	if n.ref != nil {
		if r = r.and(n.ref.check(v, w)); r == invalid || n.refOnly {
			return r
		}
	}
	switch v := v.(type) {
	case map[string]any:
		r = r.and(n.object(v, w))
	case []any:
		r = r.and(n.array(v, w))
	case string:
		r = r.and(n.string(v))
	case float64:
		r = r.and(n.number(v))
	}
	if r == invalid {
		return invalid
	}
	return r.and(n.applicators(v, w))
}

// oneOfValues is the verdict of const or enum: v equals one of values.
func oneOfValues(v any, values []any) verdict {
	for _, w := range values {
		eq, ok := equal(v, w)
		switch {
		case !ok:
			return maybe
		case eq:
			return valid
		}
	}
	return invalid
}

// integral is the library's test for "integer" on a finite float64 (is
// Sprint(x) a whole number?): a float64 from 2⁵² up is whole, and its
// shortest decimal has no digits after the point; below, a whole float64
// is its own shortest decimal and a fraction never rounds from a whole
// decimal.
func integral(x float64) bool { return x == math.Trunc(x) }

// applicators is the verdict of not, allOf, anyOf, oneOf and if.
func (n *fastNode) applicators(v any, w *walk) verdict {
	r := valid
	if n.not != nil {
		r = r.and(n.not.check(v, w).not())
	}
	for _, s := range n.allOf {
		if r = r.and(s.check(v, w)); r == invalid {
			return invalid
		}
	}
	if len(n.anyOf) > 0 {
		some := invalid
		for _, s := range n.anyOf {
			if c := s.check(v, w); c == valid {
				some = valid
				break
			} else if c == maybe {
				some = maybe
			}
		}
		r = r.and(some)
	}
	if len(n.oneOf) > 0 {
		matched, unsure := 0, 0
		for _, s := range n.oneOf {
			switch s.check(v, w) {
			case valid:
				matched++
			case maybe:
				unsure++
			}
		}
		r = r.and(count(matched, matched+unsure, 1, 1))
	}
	if n.cond != nil && (n.then != nil || n.els != nil) {
		branch := n.els
		switch n.cond.check(v, w) {
		case valid:
			branch = n.then
		case maybe:
			return maybe.and(r)
		}
		if branch != nil {
			r = r.and(branch.check(v, w))
		}
	}
	return r
}

// count is the verdict of "between min and max (-1: no maximum) matched"
// when from lo to hi subschemas or items match.
func count(lo, hi, min, max int) verdict {
	switch {
	case hi < min || max >= 0 && lo > max:
		return invalid
	case lo >= min && (max < 0 || hi <= max):
		return valid
	}
	return maybe
}

// object is the verdict of the object keywords.
func (n *fastNode) object(obj map[string]any, w *walk) verdict {
	if len(obj) < n.minProperties || n.maxProperties >= 0 && len(obj) > n.maxProperties {
		return invalid
	}
	if !has(obj, n.required) {
		return invalid
	}
	r := valid
	for _, d := range n.dependencies {
		if _, ok := obj[d.name]; !ok {
			continue
		}
		if !has(obj, d.required) {
			return invalid
		}
		if d.schema != nil {
			if r = r.and(d.schema.check(obj, w)); r == invalid {
				return invalid
			}
		}
	}
	for name, v := range obj {
		matched := false
		if p, ok := n.properties[name]; ok {
			matched = true
			r = r.and(p.check(v, w))
		}
		for _, p := range n.patternProperties {
			if p.re.MatchString(name) {
				matched = true
				r = r.and(p.node.check(v, w))
			}
		}
		if !matched && n.additional != nil {
			r = r.and(n.additional.check(v, w))
		}
		if n.propertyNames != nil {
			r = r.and(n.propertyNames.check(name, w)) // boxing name allocates: only with propertyNames
		}
		if r == invalid {
			return invalid
		}
	}
	return r
}

// has reports whether obj has every member of names.
func has(obj map[string]any, names []string) bool {
	for _, name := range names {
		if _, ok := obj[name]; !ok {
			return false
		}
	}
	return true
}

// maxUnique is the longest array whose uniqueItems the fast path decides:
// up to it the library compares every pair in order, as the fast path
// does; beyond, it hashes.
const maxUnique = 20

// array is the verdict of the array keywords.
func (n *fastNode) array(arr []any, w *walk) verdict {
	if len(arr) < n.minItems || n.maxItems >= 0 && len(arr) > n.maxItems {
		return invalid
	}
	r := valid
	if n.uniqueItems && len(arr) > 1 {
		r = unique(arr)
	}
	for i, item := range arr {
		s := n.items
		if i < len(n.prefix) {
			s = n.prefix[i]
		}
		if s == nil {
			continue
		}
		if r = r.and(s.check(item, w)); r == invalid {
			return invalid
		}
	}
	if n.contains != nil {
		matched, unsure := 0, 0
		for _, item := range arr {
			switch n.contains.check(item, w) {
			case valid:
				matched++
			case maybe:
				unsure++
			}
		}
		r = r.and(count(matched, matched+unsure, n.minContains, n.maxContains))
	}
	return r
}

// unique is the verdict of uniqueItems for an array of two items or more.
func unique(arr []any) verdict {
	if len(arr) > maxUnique {
		return maybe
	}
	for i := 1; i < len(arr); i++ {
		for j := range i {
			eq, ok := equal(arr[i], arr[j])
			switch {
			case !ok:
				return maybe
			case eq:
				return invalid
			}
		}
	}
	return valid
}

// string is the verdict of the string keywords; lengths count code
// points (an invalid UTF-8 byte counts one), as the library does.
func (n *fastNode) string(s string) verdict {
	if n.minLength >= 0 || n.maxLength >= 0 {
		l := utf8.RuneCountInString(s)
		if l < n.minLength || n.maxLength >= 0 && l > n.maxLength {
			return invalid
		}
	}
	if n.pattern != nil && !n.pattern.MatchString(s) {
		return invalid
	}
	return valid
}

// maxExact is 2⁵³: a whole float64 below it is its own shortest decimal,
// so it divides by an integer as an int64 does.
const maxExact = 1 << 53

// number is the verdict of the number keywords for a finite x.
func (n *fastNode) number(x float64) verdict {
	if n.minimum != nil && n.minimum.cmp(x) < 0 ||
		n.maximum != nil && n.maximum.cmp(x) > 0 ||
		n.exclusiveMinimum != nil && n.exclusiveMinimum.cmp(x) <= 0 ||
		n.exclusiveMaximum != nil && n.exclusiveMaximum.cmp(x) >= 0 {
		return invalid
	}
	switch {
	case n.inexact:
		return maybe
	case n.multipleOf == 0:
		return valid
	case !integral(x):
		return invalid // a fraction's decimal is no whole multiple of an integer
	case math.Abs(x) >= maxExact:
		return maybe
	case int64(x)%n.multipleOf != 0:
		return invalid
	}
	return valid
}
