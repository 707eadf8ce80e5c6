package rules

import (
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The cost bound of [Schema.Check] (P9). The library has no budget of its
// own, and its cost is exponential in a body's nesting on a schema whose
// oneOf or anyOf has two branches that both go on into the same child: it
// evaluates every branch of a oneOf, and of an anyOf every branch up to
// the first that matches, each of them all the way down. Before the
// library runs, a costWalk goes through the (subschema, value) pairs the
// library's validator.go (v6.0.3) would visit, in its order, and counts
// its work in units: one per subschema visit, one per member or item a
// visit goes through, one per 32 bytes of a string a visit reads. It
// stops as soon as the count passes its budget, and the body is then
// refused instead of validated: the walk itself never costs more than a
// few times the budget (workFactor). A schema where no value can be
// reached along two paths (costBuilder.single: the CallKaro one) is not
// walked at all.
//
// The count is an upper bound of what the library does. It models the
// library's exits that do not depend on an answer (a boolean schema, a
// value of the wrong type, a $ref before draft 2019-09, a $ref cycle) and
// the ones that do only where the answer is known for certain: an anyOf
// stops at a branch, and an if picks then or else, when the fast path
// (schema_fast.go) decides the branch, or else when the library itself,
// run on that branch alone, does so within what is left of the budget
// (only for schemas where a branch alone gets the answer it gets in
// place: no $dynamicRef, $recursiveRef, unevaluated* or $ref cycle).
// Everything else is counted in full.
//
// Where a $dynamicRef or $recursiveRef goes depends on the scope chain
// and on which resource each subschema of it is in, which the library
// does not export: the walk reads that from the schema's document
// (schemaDoc) and follows the library, and where the document does not
// say, counts the most any subschema the reference may go to costs.
//
// A body may cost baseCost, or its linear cost when that is more: the
// cost of visiting each (subschema, value) pair it reaches once, counted
// by the same walk remembering the pairs it has been through (linear in
// the body's size, capped at maxLinear). A big body under a plain schema
// thus costs what it always did, while a body that makes the library go
// through the same pairs again and again (2^depth times under a nested
// oneOf) is refused. Under a schema with alternatives, the library's cost
// is at most maxLinear units whatever the body.

// baseCost is what any body may cost: 2^16 units, 30 to 80 ms of the
// library on the worst shape measured (a nested oneOf whose branches all
// fail, 0.6 to 1.2 µs a unit); a CallKaro body costs 63. A body over it
// may still cost its linear cost (below), up to maxLinear.
const baseCost = 1 << 16

// maxLinear caps the linear cost counted for a body: what checking each
// (subschema, value) pair it reaches once costs, which is what the
// library spends on a schema without alternatives. A 400 kB array of
// 200,000 numbers under an anyOf of two types costs 600,000 units (the
// library took 120 ms); 1 MiB of small objects under a oneOf of two
// object schemas, 1.5 million (the library took 0.6 to 1 s).
const maxLinear = 1 << 22

// maxPairs bounds the pairs the linear walk remembers: it stops there, and
// the body's budget is what it counted until then. Reaching it took 41 MB
// of allocations (the map as it grows) and 0.34 s; a 1 MiB body holds at
// most about 350,000 objects and arrays.
const maxPairs = 1 << 19

// ErrTooComplex is the error of [Schema.Check] for a body the library
// could take too long to check (errors.Is).
var ErrTooComplex = errors.New("body too complex to check against the schema")

// ComplexityError is the error of [Schema.Check] for a body whose check
// would cost more than its budget. It matches [ErrTooComplex].
type ComplexityError struct {
	// Budget is the bound the cost went past, in checks.
	Budget int
}

// Error says the body is too complex and what budget it went past.
func (e *ComplexityError) Error() string {
	return fmt.Sprintf("%v: it could take more than %d checks (nested oneOf or anyOf)", ErrTooComplex, e.Budget)
}

// Is makes errors.Is(err, ErrTooComplex) true.
func (e *ComplexityError) Is(target error) bool { return target == ErrTooComplex }

// costNode is what the cost walk needs of one subschema of the library's
// compiled schema. Children point at the costNodes of theirs.
type costNode struct {
	sch *jsonschema.Schema
	// fixed: a boolean schema; the library returns at once.
	fixed bool
	types kinds
	// fast is the subschema's fast-path node; nil without a fast path.
	fast *fastNode

	ref *costNode
	// refOnly: a $ref before draft 2019-09, after which the library
	// returns.
	refOnly bool
	// recursiveRef is $recursiveRef's target; recursiveAnchor tells
	// whether it has $recursiveAnchor (then the scope chain decides: see
	// costWalk.recursiveRef).
	recursiveRef    *costNode
	recursiveAnchor bool
	// dynamicRef is $dynamicRef's target; dynamicAnchor, when not "",
	// the anchor the scope chain resolves, and anchors the subschemas
	// with it (see costWalk.dynamicRef).
	dynamicRef    *costNode
	dynamicAnchor string
	anchors       *costAnchors
	// resource is the location of the subschema's resource, "" where the
	// document does not say (schemaDoc.resourceAt), and inRecursive
	// whether that has $recursiveAnchor: true. Set from draft 2019-09 on
	// in a plan with $recursiveRef or $dynamicRef.
	resource    string
	inRecursive bool

	not, cond, then, els *costNode
	allOf, anyOf, oneOf  []*costNode

	// sameValue are the subschemas of dependencies and dependentSchemas:
	// each applies to the object when its member is there.
	sameValue         []costDep
	properties        map[string]*costNode
	patternProperties []costPattern
	additional        *costNode
	propertyNames     *costNode
	unevaluatedProps  *costNode

	uniqueItems      bool
	prefix           []*costNode
	items            *costNode
	contains         *costNode
	unevaluatedItems *costNode

	// readsStrings: a string keyword (length, pattern, format) reads the
	// whole string.
	readsStrings bool
	// join: more than one keyword leads to the subschema (or a dynamic
	// reference may): only there can the walk meet a pair again, so only
	// there does the linear walk remember the pairs it has been through.
	join bool
}

// costAnchors are the subschemas with one $dynamicAnchor: all of them,
// and by the location of their resource (nil when the document does not
// say whose each is, or two are in one resource).
type costAnchors struct {
	all []*costNode
	in  map[string]*costNode
}

// costDep is a dependencies or dependentSchemas subschema.
type costDep struct {
	name string
	node *costNode
}

// costPattern is a patternProperties entry.
type costPattern struct {
	re   jsonschema.Regexp
	node *costNode
}

// costPlan is the cost walk's view of a compiled schema.
type costPlan struct {
	root *costNode
	// oracle: a branch checked alone by the library gets the answer it
	// gets in place (see the comment at the top).
	oracle bool
	// unevaluated: some subschema has unevaluatedProperties or
	// unevaluatedItems, for which the library's anyOf checks every
	// branch.
	unevaluated bool
	// scoped: the walk keeps the scope chain, which only a $ref cycle
	// and $recursiveRef or $dynamicRef need (without, it allocates
	// nothing).
	scoped bool
	// single: no value can be reached along two paths of the schema (see
	// costBuilder.single): the library's cost is the body's linear cost,
	// which the budget always allows, so there is nothing to walk.
	single bool
}

// newCostPlan builds the plan of sch, compiled from doc; fast are the
// fast path's nodes (nil without a fast path).
func newCostPlan(sch *jsonschema.Schema, fast map[*jsonschema.Schema]*fastNode, doc schemaDoc) *costPlan {
	b := costBuilder{nodes: map[*jsonschema.Schema]*costNode{}, fast: fast, plain: true, doc: doc}
	root := b.node(sch)
	if b.dynamic {
		for _, n := range b.nodes {
			n.join = true
			// Before 2019-09 a resource has neither $recursiveAnchor
			// nor $dynamicAnchors.
			if n.sch.DraftVersion >= 2019 {
				n.resource, n.inRecursive = doc.resourceAt(n.sch.Location)
			}
		}
		for _, a := range b.anchors {
			a.index()
		}
		for _, n := range b.nodes {
			// The static target has the anchor, so the document scan
			// found it; should it not have, it is one more candidate.
			if n.anchors != nil && !slices.Contains(n.anchors.all, n.dynamicRef) {
				n.anchors = &costAnchors{all: append(slices.Clip(n.anchors.all), n.dynamicRef)}
			}
		}
	}
	cycles := b.cycles()
	return &costPlan{root: root, oracle: b.plain && !cycles, unevaluated: b.unevaluated, scoped: cycles || b.dynamic,
		single: b.single()}
}

// costBuilder builds costNodes, one per subschema.
type costBuilder struct {
	nodes map[*jsonschema.Schema]*costNode
	fast  map[*jsonschema.Schema]*fastNode
	// plain stays true while no subschema uses $dynamicRef,
	// $recursiveRef, unevaluated* or an extension.
	plain bool
	// unevaluated: some subschema uses unevaluated*; dynamic,
	// $recursiveRef or $dynamicRef.
	unevaluated, dynamic bool
	// doc is the schema's document; anchors, its subschemas with each
	// $dynamicAnchor a $dynamicRef resolves.
	doc     schemaDoc
	anchors map[string]*costAnchors
}

func (b *costBuilder) node(s *jsonschema.Schema) *costNode {
	if s == nil {
		return nil
	}
	if n, ok := b.nodes[s]; ok {
		n.join = true
		return n
	}
	n := &costNode{sch: s, fast: b.fast[s]}
	b.nodes[s] = n
	b.fill(n, s)
	return n
}

func (b *costBuilder) list(s []*jsonschema.Schema) []*costNode {
	out := make([]*costNode, len(s))
	for i, e := range s {
		out[i] = b.node(e)
	}
	return out
}

func (b *costBuilder) fill(n *costNode, s *jsonschema.Schema) {
	if s.Bool != nil {
		n.fixed = true
		return
	}
	if s.RecursiveRef != nil || s.DynamicRef != nil || s.UnevaluatedProperties != nil ||
		s.UnevaluatedItems != nil || len(s.Extensions) > 0 || s.ContentSchema != nil {
		b.plain = false
	}
	if s.UnevaluatedProperties != nil || s.UnevaluatedItems != nil {
		b.unevaluated = true
	}
	if s.RecursiveRef != nil || s.DynamicRef != nil {
		b.dynamic = true
	}
	if s.Types != nil {
		for _, t := range s.Types.ToStrings() {
			n.types |= kindNames[t]
		}
	}
	n.ref = b.node(s.Ref)
	n.refOnly = s.Ref != nil && s.DraftVersion < 2019
	if s.DraftVersion >= 2019 {
		if s.RecursiveRef != nil {
			n.recursiveRef, n.recursiveAnchor = b.node(s.RecursiveRef), s.RecursiveRef.RecursiveAnchor
		}
		if d := s.DynamicRef; d != nil {
			n.dynamicRef = b.node(d.Ref)
			if d.Anchor != "" && d.Ref.DynamicAnchor == d.Anchor {
				n.dynamicAnchor, n.anchors = d.Anchor, b.anchorNodes(d.Anchor)
			}
		}
	}
	n.not, n.cond, n.then, n.els = b.node(s.Not), b.node(s.If), b.node(s.Then), b.node(s.Else)
	n.allOf, n.anyOf, n.oneOf = b.list(s.AllOf), b.list(s.AnyOf), b.list(s.OneOf)

	for name, dep := range s.Dependencies {
		if d, ok := dep.(*jsonschema.Schema); ok {
			n.sameValue = append(n.sameValue, costDep{name, b.node(d)})
		}
	}
	if s.DraftVersion != 4 && s.DraftVersion != 6 {
		for name, d := range s.DependentSchemas {
			n.sameValue = append(n.sameValue, costDep{name, b.node(d)})
		}
	}
	if len(s.Properties) > 0 {
		n.properties = make(map[string]*costNode, len(s.Properties))
		for name, p := range s.Properties {
			n.properties[name] = b.node(p)
		}
	}
	for re, p := range s.PatternProperties {
		n.patternProperties = append(n.patternProperties, costPattern{re, b.node(p)})
	}
	if a, ok := s.AdditionalProperties.(*jsonschema.Schema); ok {
		n.additional = b.node(a)
	}
	if s.DraftVersion != 4 {
		n.propertyNames = b.node(s.PropertyNames)
	}
	n.unevaluatedProps, n.unevaluatedItems = b.node(s.UnevaluatedProperties), b.node(s.UnevaluatedItems)

	n.uniqueItems = s.UniqueItems
	if s.DraftVersion < 2020 {
		switch items := s.Items.(type) {
		case *jsonschema.Schema:
			n.items = b.node(items)
		case []*jsonschema.Schema:
			n.prefix = b.list(items)
			if a, ok := s.AdditionalItems.(*jsonschema.Schema); ok {
				n.items = b.node(a)
			}
		}
	} else {
		n.prefix, n.items = b.list(s.PrefixItems), b.node(s.Items2020)
	}
	n.contains = b.node(s.Contains)
	n.readsStrings = s.MinLength != nil || s.MaxLength != nil || s.Pattern != nil || s.Format != nil
}

// single reports whether every value of any body is reached along one
// path of the schema at most: no subschema applies two subschemas to the
// same value (not, if, allOf, anyOf, oneOf, dependencies and
// dependentSchemas, $recursiveRef, $dynamicRef, unevaluated*, or a $ref
// beside keywords that go into the members or items), and no member or
// item is checked by two (patternProperties, contains, propertyNames).
// The library then visits each (subschema, value) pair once: its cost is
// the body's linear cost.
func (b *costBuilder) single() bool {
	if !b.plain { // not plain: also with unevaluated* or dynamic
		return false
	}
	for _, n := range b.nodes {
		if n.not != nil || n.cond != nil || n.then != nil || n.els != nil || len(n.allOf)+len(n.anyOf)+len(n.oneOf) > 0 ||
			len(n.sameValue) > 0 || len(n.patternProperties) > 0 || n.contains != nil || n.propertyNames != nil {
			return false
		}
		if n.ref != nil && !n.refOnly && (n.properties != nil || n.additional != nil || n.items != nil || len(n.prefix) > 0) {
			return false
		}
	}
	return true
}

// cycles reports whether a subschema reaches itself without moving into
// the value (the library stops such a cycle with an error, so a branch
// alone could get another answer than in place). It follows a dynamic
// reference only to its static target: with one, the plan has no oracle
// and keeps the scope chain whatever cycles says.
func (b *costBuilder) cycles() bool {
	return cyclic(maps.Values(b.nodes), func(n *costNode) []*costNode {
		next := append([]*costNode{n.ref, n.recursiveRef, n.dynamicRef, n.not, n.cond, n.then, n.els}, n.allOf...)
		next = append(append(next, n.anyOf...), n.oneOf...)
		for _, d := range n.sameValue {
			next = append(next, d.node)
		}
		return next
	})
}

// cyclic reports whether a node of nodes reaches itself along next (a
// depth-first search that marks the nodes on its path and those done).
// next may return nil nodes: they lead nowhere.
func cyclic[N comparable](nodes iter.Seq[N], next func(N) []N) bool {
	const onPath, done = 1, 2
	var none N
	state := map[N]int8{}
	var visit func(n N) bool
	visit = func(n N) bool {
		if n == none {
			return false
		}
		switch state[n] {
		case onPath:
			return true
		case done:
			return false
		}
		state[n] = onPath
		for _, c := range next(n) {
			if visit(c) {
				return true
			}
		}
		state[n] = done
		return false
	}
	for n := range nodes {
		if visit(n) {
			return true
		}
	}
	return false
}

// anchorNodes are the subschemas of the document with $dynamicAnchor
// name, built once per name.
func (b *costBuilder) anchorNodes(name string) *costAnchors {
	if a, ok := b.anchors[name]; ok {
		return a
	}
	schemas := b.doc.dynamicAnchors(name)
	a := &costAnchors{all: make([]*costNode, len(schemas))}
	if b.anchors == nil {
		b.anchors = map[string]*costAnchors{}
	}
	// Filled below: a $dynamicRef met meanwhile shares it.
	b.anchors[name] = a
	for i, s := range schemas {
		a.all[i] = b.node(s)
	}
	return a
}

// index sets a.in from the resources of a.all.
func (a *costAnchors) index() {
	in := make(map[string]*costNode, len(a.all))
	for _, n := range a.all {
		if _, dup := in[n.resource]; dup || n.resource == "" {
			return
		}
		in[n.resource] = n
	}
	a.in = in
}

// schemaDoc is the document a schema was compiled from, with its compiler
// and location: where the cost walk finds the subschemas a $dynamicRef
// may resolve to.
//
// The library resolves a $dynamicRef through the $dynamicAnchors of the
// resources of the scope chain, which it does not export, and which no
// exported field need lead to (a $defs entry with a $dynamicAnchor that
// nothing references is still its resource's anchor). Each of them is a
// subschema of this one document (references to others are refused) with
// "$dynamicAnchor" in its JSON, which the compiler compiled once:
// compiling its location again returns that same *Schema.
type schemaDoc struct {
	c   *jsonschema.Compiler
	loc string
	doc any
}

// dynamicAnchors is every subschema of the document with $dynamicAnchor
// name: every JSON object in it with "$dynamicAnchor": name that compiles
// (one elsewhere than a subschema, say in a const, compiles to a schema
// the library never resolves to: one more candidate, which only counts
// more).
func (d schemaDoc) dynamicAnchors(name string) []*jsonschema.Schema {
	if d.c == nil {
		return nil
	}
	var out []*jsonschema.Schema
	var path []string
	var scan func(v any)
	scan = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if a, ok := v["$dynamicAnchor"].(string); ok && a == name {
				ptr := ""
				for _, tok := range path {
					ptr += "/" + url.PathEscape(strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1"))
				}
				if s, err := d.c.Compile(d.loc + "#" + ptr); err == nil && s.DynamicAnchor == name && !slices.Contains(out, s) {
					out = append(out, s)
				}
			}
			for k, e := range v {
				path = append(path, k)
				scan(e)
				path = path[:len(path)-1]
			}
		case []any:
			for i, e := range v {
				path = append(path, strconv.Itoa(i))
				scan(e)
				path = path[:len(path)-1]
			}
		}
	}
	scan(d.doc)
	return out
}

// resourceAt is the location of the resource of the subschema at loc
// (its Location), "" when the document does not say, and whether that
// resource has $recursiveAnchor: true. The resource is the nearest
// subschema on the way from the document's root to loc that is the root
// or has an "$id" other than a fragment: from draft 2019-09 on, each such
// $id makes one (resourceAt is only asked about subschemas from 2019-09
// on, and a resource is of its subschemas' draft). A way through anything
// else than the keywords that hold subschemas (an unknown keyword that a
// $ref points into) does not say. The compiler compiled the resource (it
// compiles the resource of every subschema): its compiled
// RecursiveAnchor is the library's.
func (d schemaDoc) resourceAt(loc string) (res string, recursive bool) {
	frag, ok := strings.CutPrefix(loc, d.loc+"#")
	if !ok || d.c == nil {
		return "", false
	}
	var toks []string // escaped as in loc; none: the root
	if frag != "" {
		ptr, ok := strings.CutPrefix(frag, "/")
		if !ok {
			return "", false
		}
		toks = strings.Split(ptr, "/")
	}
	v, at := d.doc, 0 // the resource is at toks[:at]
	for i := 0; i < len(toks); i++ {
		kw, ok := unescapeToken(toks[i])
		s, isObject := v.(map[string]any)
		if !ok || !isObject {
			return "", false
		}
		if v, ok = s[kw]; !ok || !slices.Contains(subschemaKeywords, kw) {
			return "", false
		}
		list, isList := v.([]any)
		if isList && slices.Contains(listKeywords, kw) || slices.Contains(mapKeywords, kw) {
			// A member of the keyword's list or map is the subschema.
			if i++; i == len(toks) {
				return "", false
			}
			tok, ok := unescapeToken(toks[i])
			if m, isMap := v.(map[string]any); isMap && ok {
				v, ok = m[tok]
			} else if j, err := strconv.Atoi(tok); isList && ok && err == nil && j >= 0 && j < len(list) {
				v = list[j]
			} else {
				ok = false
			}
			if !ok {
				return "", false
			}
		}
		if o, isObject := v.(map[string]any); isObject {
			if id, _ := o["$id"].(string); id != "" && !strings.HasPrefix(id, "#") {
				at = i + 1
			}
		}
	}
	res = d.loc + "#"
	if at > 0 {
		res += "/" + strings.Join(toks[:at], "/")
	}
	r, err := d.c.Compile(res)
	if err != nil {
		return "", false
	}
	return res, r.RecursiveAnchor
}

// The keywords whose value holds subschemas, as the library's drafts list
// them (draft.go): a map of them, a list of them, or one.
var (
	mapKeywords       = []string{"definitions", "$defs", "properties", "patternProperties", "dependencies", "dependentSchemas"}
	listKeywords      = []string{"allOf", "anyOf", "oneOf", "items", "prefixItems"}
	subschemaKeywords = append(append([]string{"not", "additionalProperties", "additionalItems", "propertyNames", "contains",
		"if", "then", "else", "unevaluatedProperties", "unevaluatedItems", "contentSchema"}, mapKeywords...), listKeywords...)
)

// unescapeToken is a JSON pointer token as a Location escapes it, read.
func unescapeToken(tok string) (string, bool) {
	tok, err := url.PathUnescape(tok)
	return strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~"), err == nil
}

// workFactor bounds the walk's own work, in the same units, to this many
// times the library's budget: its visits, and the fast path's and the
// library's checks of branches (each branch is checked once per place, so
// a chain of n nested anyOf costs the walk about n times what it costs
// the library).
const workFactor = 4

// costWalk is one walk: what is left of the library's budget (left) and
// of the walk's own (work), and the library's scope chain (the
// subschemas being visited, outermost first); base is where the current
// value's part of it starts (the library's cycle check).
type costWalk struct {
	plan  *costPlan
	left  int
	work  int
	scope []*costNode
	base  int
	// seen, when not nil, are the pairs the walk has been through: it
	// counts the linear cost (see count).
	seen map[pairKey]struct{}
}

// within reports whether checking doc costs the library at most its
// budget, which it returns: baseCost, or doc's linear cost.
func (p *costPlan) within(doc any) (int, bool) {
	if p.single {
		return baseCost, true
	}
	if _, ok := p.count(doc, baseCost, nil); ok {
		return baseCost, true
	}
	// Stopped early (by maxPairs or its own work), the linear walk's
	// count is less than the linear cost: the budget is only smaller.
	linear, _ := p.count(doc, maxLinear, map[pairKey]struct{}{})
	linear = min(linear, maxLinear)
	if linear <= baseCost {
		return baseCost, false
	}
	_, ok := p.count(doc, linear, nil)
	return linear, ok
}

// count walks doc with a budget of budget units (its own work workFactor
// times that): the units it counted (up to where it stopped) and whether
// the budgets held. With seen, it counts doc's linear cost instead: each
// (subschema, object or array) pair once, every branch of anyOf and if.
func (p *costPlan) count(doc any, budget int, seen map[pairKey]struct{}) (int, bool) {
	w := costWalk{plan: p, left: budget, work: workFactor * budget, seen: seen}
	if p.scoped {
		w.scope = make([]*costNode, 0, 32)
	}
	ok := w.visit(p.root, doc)
	return budget - w.left, ok
}

// pairKey is a (subschema, value) pair the linear walk has been through:
// the value is an object or array, known by its address (and length).
type pairKey struct {
	n   *costNode
	at  unsafe.Pointer
	len int
}

// key is the pairKey of n and v; false for a value that is not a
// non-empty object or array.
func key(n *costNode, v any) (pairKey, bool) {
	switch v := v.(type) {
	case map[string]any:
		if len(v) > 0 {
			return pairKey{n, reflect.ValueOf(v).UnsafePointer(), len(v)}, true
		}
	case []any:
		if len(v) > 0 {
			return pairKey{n, unsafe.Pointer(&v[0]), len(v)}, true
		}
	}
	return pairKey{}, false
}

// spend counts n units of the library's work (the walk's too): false once
// either budget is gone.
func (w *costWalk) spend(n int) bool {
	w.left -= n
	w.work -= n
	return w.left >= 0 && w.work >= 0
}

// spendWork counts n units of the walk's own work.
func (w *costWalk) spendWork(n int) bool {
	w.work -= n
	return w.work >= 0
}

// child visits a member or item: a new value, so a new part of the scope.
func (w *costWalk) child(n *costNode, v any) bool {
	base := w.base
	w.base = len(w.scope)
	ok := w.visit(n, v)
	w.base = base
	return ok
}

// fresh visits a value the library checks with a validation of its own
// (propertyNames): a new scope chain.
func (w *costWalk) fresh(n *costNode, v any) bool {
	scope, base := w.scope, w.base
	w.scope, w.base = w.scope[len(w.scope):], 0
	ok := w.visit(n, v)
	w.scope, w.base = scope, base
	return ok
}

// visit counts what the library's validate does for n and v, in its
// order; false once the budget is gone.
func (w *costWalk) visit(n *costNode, v any) bool {
	if !w.spend(1) {
		return false
	}
	if n == nil || n.fixed {
		return true
	}
	for _, s := range w.scope[w.base:] {
		if s == n {
			return true // a $ref cycle: the library reports it and returns
		}
	}
	k := kindOf(v)
	if k == 0 {
		return true
	}
	if n.types != 0 && n.types&k == 0 {
		if n.types&kInteger == 0 || k != kNumber || !integral(v.(float64)) {
			return true
		}
	}
	if w.seen != nil && n.join {
		if k, ok := key(n, v); ok {
			if _, done := w.seen[k]; done {
				return true
			}
			if len(w.seen) >= maxPairs {
				w.work = -1 // the memory bound: stop here
				return false
			}
			w.seen[k] = struct{}{}
		}
	}
	if w.plan.scoped {
		w.scope = append(w.scope, n)
		defer w.pop()
	}
	if n.ref != nil {
		if !w.visit(n.ref, v) {
			return false
		}
		if n.refOnly {
			return true
		}
	}
	switch v := v.(type) {
	case map[string]any:
		if !w.object(n, v) {
			return false
		}
	case []any:
		if !w.array(n, v) {
			return false
		}
	case string:
		if n.readsStrings && !w.spend(len(v)/32) {
			return false
		}
	}
	return w.applicators(n, v)
}

// pop ends the visit of the innermost subschema of the scope chain.
func (w *costWalk) pop() { w.scope = w.scope[:len(w.scope)-1] }

// object counts the object keywords.
func (w *costWalk) object(n *costNode, obj map[string]any) bool {
	if !w.spend(len(obj) * (1 + len(n.patternProperties))) {
		return false
	}
	for _, d := range n.sameValue {
		if _, ok := obj[d.name]; ok && !w.visit(d.node, obj) {
			return false
		}
	}
	for name, v := range obj {
		matched := false
		if p, ok := n.properties[name]; ok {
			matched = true
			if !w.child(p, v) {
				return false
			}
		}
		for _, p := range n.patternProperties {
			if p.re.MatchString(name) {
				matched = true
				if !w.child(p.node, v) {
					return false
				}
			}
		}
		if !matched && n.additional != nil && !w.child(n.additional, v) {
			return false
		}
		if n.propertyNames != nil && !w.fresh(n.propertyNames, name) {
			return false
		}
		// The library checks what no other keyword evaluated; counting
		// every member is an upper bound.
		if n.unevaluatedProps != nil && !w.child(n.unevaluatedProps, v) {
			return false
		}
	}
	return true
}

// array counts the array keywords.
func (w *costWalk) array(n *costNode, arr []any) bool {
	if !w.spend(len(arr)) {
		return false
	}
	if n.uniqueItems && len(arr) > 1 && !w.spendSize(arr) {
		return false // comparing or hashing the items reads all of them
	}
	for i, v := range arr {
		s := n.items
		if i < len(n.prefix) {
			s = n.prefix[i]
		}
		if s != nil && !w.child(s, v) {
			return false
		}
		if n.contains != nil && !w.child(n.contains, v) {
			return false
		}
		if n.unevaluatedItems != nil && !w.child(n.unevaluatedItems, v) {
			return false
		}
	}
	return true
}

// spendSize spends one unit per value in v.
func (w *costWalk) spendSize(v any) bool {
	if !w.spend(1) {
		return false
	}
	switch v := v.(type) {
	case map[string]any:
		for _, e := range v {
			if !w.spendSize(e) {
				return false
			}
		}
	case []any:
		for _, e := range v {
			if !w.spendSize(e) {
				return false
			}
		}
	case string:
		return w.spend(len(v) / 32)
	}
	return true
}

// applicators counts $recursiveRef, $dynamicRef, not, allOf, anyOf,
// oneOf and if/then/else.
func (w *costWalk) applicators(n *costNode, v any) bool {
	if n.recursiveRef != nil && !w.recursiveRef(n, v) {
		return false
	}
	if n.dynamicRef != nil && !w.dynamicRef(n, v) {
		return false
	}
	if n.not != nil && !w.visit(n.not, v) {
		return false
	}
	for _, s := range n.allOf {
		if !w.visit(s, v) {
			return false
		}
	}
	// anyOf stops at the first branch that matches (the library goes on
	// only for unevaluated*, where the oracle is off).
	for _, s := range n.anyOf {
		before := w.left
		if !w.visit(s, v) {
			return false
		}
		if w.seen == nil && !w.plan.unevaluated && w.answer(s, v, before-w.left) == valid {
			break
		}
	}
	// oneOf checks every branch, up to a second match: count them all.
	for _, s := range n.oneOf {
		if !w.visit(s, v) {
			return false
		}
	}
	if n.cond != nil {
		before := w.left
		if !w.visit(n.cond, v) {
			return false
		}
		r := maybe
		if w.seen == nil {
			r = w.answer(n.cond, v, before-w.left)
		}
		switch r {
		case valid:
			return w.visit(n.then, v)
		case invalid:
			return w.visit(n.els, v)
		}
		return w.visit(n.then, v) && w.visit(n.els, v)
	}
	return true
}

// answer is the library's answer for s and v when it is known for
// certain, maybe otherwise: the fast path's (within about cost checks),
// or the library's own on s alone when the plan allows it and its cost
// (cost, which visiting s just counted) is still within the budget. What
// either spends is counted as the walk's work.
func (w *costWalk) answer(s *costNode, v any, cost int) verdict {
	if s == nil {
		return valid
	}
	if s.fast != nil {
		// The fast path goes on through what it is unsure of (see
		// maxChecks): it gets no more checks than s cost the walk.
		limit := min(w.work, cost+16)
		fw := walk{left: limit}
		r := s.fast.check(v, &fw)
		if !w.spendWork(limit - fw.left) {
			return maybe
		}
		if r != maybe {
			return r
		}
	}
	if !w.plan.oracle || !w.spendWork(cost) {
		return maybe
	}
	if s.sch.Validate(v) == nil {
		return valid
	}
	return invalid
}

// recursiveRef counts n's $recursiveRef. The library goes to its
// target, or, when that has $recursiveAnchor, to the outermost subschema
// of the scope chain whose resource has $recursiveAnchor: true (that
// subschema, not its resource). The library does not export which
// resource a subschema is in: the document says (costNode.resource);
// where it does not, that subschema may be the target as well, and the
// walk counts the most any of them costs.
func (w *costWalk) recursiveRef(n *costNode, v any) bool {
	t := n.recursiveRef
	if !n.recursiveAnchor {
		return w.visit(t, v)
	}
	start, least := w.left, w.left
	// Visits push onto the scope past its end: this range is unchanged.
	for _, s := range w.scope {
		if s.inRecursive {
			t = s
			break
		}
		if s.resource == "" && s.sch.DraftVersion >= 2019 && !w.alternative(s, v, start, &least) {
			return false
		}
	}
	if !w.alternative(t, v, start, &least) {
		return false
	}
	w.left = least
	return true
}

// dynamicRef counts n's $dynamicRef. The library goes to its target, or,
// when that has the $dynamicAnchor the reference names, to that anchor in
// the outermost resource of the scope chain that has one (dynamicTarget).
// Where the document does not say which that is, the walk counts the most
// any subschema with the anchor costs.
func (w *costWalk) dynamicRef(n *costNode, v any) bool {
	if n.dynamicAnchor == "" {
		return w.visit(n.dynamicRef, v)
	}
	if t, ok := w.dynamicTarget(n); ok {
		return w.visit(t, v)
	}
	start, least := w.left, w.left
	for _, s := range n.anchors.all {
		if !w.alternative(s, v, start, &least) {
			return false
		}
	}
	w.left = least
	return true
}

// dynamicTarget is where the library's $dynamicRef of n goes, when the
// document says (ok). A resource before draft 2020-12 has no
// $dynamicAnchors.
func (w *costWalk) dynamicTarget(n *costNode) (t *costNode, ok bool) {
	in := n.anchors.in
	if in == nil {
		return nil, false
	}
	for _, s := range w.scope {
		if s.sch.DraftVersion < 2020 {
			continue
		}
		if s.resource == "" {
			return nil, false
		}
		if a, ok := in[s.resource]; ok {
			return a, true
		}
	}
	return n.dynamicRef, true
}

// alternative visits v with s, one of the subschemas a dynamic reference
// may go to, from what was left of the budget before the first (start),
// and keeps in least the least left after any of them: the walk counts
// the most one of them costs, and its own work all of them. The linear
// walk counts them all (each pair once), as it does every branch.
func (w *costWalk) alternative(s *costNode, v any, start int, least *int) bool {
	if w.seen == nil {
		w.left = start
	}
	if !w.visit(s, v) {
		return false
	}
	*least = min(*least, w.left)
	return true
}
