package rules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"github.com/pipelined/pipelined/pipeline"
)

// MemoryBudget bounds what one evaluation may allocate inside the expr VM
// (ranges, arrays, maps it builds), counted in expr's units. An expression
// that goes over fails with "memory budget exceeded".
const MemoryBudget = 1 << 20

// MaxPayload bounds what a transform may build, as JSON. A bigger output is
// a transform error: the event goes to the sink's dead-letter queue.
const MaxPayload = 1 << 20

// MaxNodes bounds the size of one expression's syntax tree.
const MaxNodes = 10000

// Env is what every expression sees.
type Env struct {
	// Body is the decoded JSON request body (map[string]any for objects).
	Body any `expr:"body"`
	// Source is the name of the [[source]] that received the event.
	Source string `expr:"source"`
	// Headers are the request headers with lower-case names.
	Headers map[string]string `expr:"headers"`
	// ID is the event's id.
	ID string `expr:"id"`
	// ReceivedAt is when the request was read.
	ReceivedAt time.Time `expr:"received_at"`

	// budget is what the evaluation running over this Env has used: set
	// on the copy Program.run makes, never on the caller's.
	budget *budget
}

// SyntaxError is returned by [CompileBool] and [CompileValue] when an
// expression does not compile. Line and Column are 1-based positions inside
// the expression's own text; an error about the whole expression (such as
// "expected bool, but got int") is placed at 1:1.
type SyntaxError struct {
	Line, Column int
	Msg          string
}

// Error returns "Msg (line:col)".
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("%s (%d:%d)", e.Msg, e.Line, e.Column)
}

// Program is a compiled expression. It is safe for concurrent use.
type Program struct {
	src  string
	prog *vm.Program
	// last is the runtime error this program returned last, kept so that
	// an expression that fails the same way on every event (a route
	// written for other payloads) makes its error once, not per event.
	last atomic.Pointer[lastError]
}

// lastError is a runtime error as [Program.run] made it: its message
// (redacted), its position and the error itself, which is returned again
// for the same message at the same position.
type lastError struct {
	msg       string
	line, col int
	err       error
}

// runner is what evaluating programs over one event takes: a VM and the
// evaluation (a copy of the caller's Env and its budget). A vm.VM is not
// safe for concurrent use, but its Run resets all state, so one VM may
// serve many programs one at a time. Runners are pooled: one is held only
// while its caller evaluates, and the results that leave it (a bool, a
// dedup key, encoded payloads, errors) never refer to it.
type runner struct {
	vm vm.VM
	ev evaluation
}

var runners = sync.Pool{New: func() any { return &runner{vm: vm.VM{MemoryBudget: MemoryBudget}} }}

// getRunner returns a runner whose evaluation is over a copy of env and
// stops when ctx is done. Give it back with release.
func getRunner(ctx context.Context, env *Env) *runner {
	r := runners.Get().(*runner)
	r.ev.env = *env
	r.ev.budget = budget{ctx: ctx}
	r.ev.env.budget = &r.ev.budget
	return r
}

// release forgets the event (so that a pooled runner keeps no body alive)
// and returns r to the pool.
func (r *runner) release() {
	r.ev = evaluation{}
	runners.Put(r)
}

// compileHook, when set (by tests only), is called with every expression
// compiled.
var compileHook func(src string)

// baseOptions are the options without the fetch shortcut of fetch.go,
// which changes speed only: the tests compare the two.
func baseOptions() []expr.Option {
	return []expr.Option{
		expr.Env(Env{}),
		expr.DisableBuiltin("now"),
		expr.MaxNodes(MaxNodes),
	}
}

// CompileBool compiles a route's when: the result must be a bool. At run
// time a nil result (a missing field) counts as false.
func CompileBool(src string) (*Program, error) {
	p, err := compileFast(src, expr.AsBool())
	if err != nil {
		return nil, err
	}
	if err := notACondition(src); err != nil {
		return nil, err
	}
	return p, nil
}

// notACondition catches what expr.AsBool lets through when a field's type
// is unknown until run time, or when the result may be either of two
// values of different types: an expression whose result can only be a
// number, a string, a list or a map is never true or false, so the route
// would fail on every event (that takes that way) instead of at `pipelined
// check`. The result is looked for in the last step (body.amount + 1),
// after a let, in either branch of a ?: or an if, and on both sides of
// ??: the value on its left when there is one (an arithmetic step always
// has one), the fallback on its right when not (body.ok ?? 0 fails on
// every event without body.ok). A step is not a condition when it is
// arithmetic, a slice (a string or a list), or of a type the checker
// knows that is not bool (a literal 0 or "no", len(...), [..], {..}); nil
// is (it counts as false).
func notACondition(src string) error {
	c := conf.CreateNew()
	for _, op := range baseOptions() {
		op(c)
	}
	for name := range c.Disabled {
		delete(c.Builtins, name)
	}
	tree, err := checker.ParseCheck(src, c)
	if err != nil {
		return nil // compiled above: not expected; the compile's error stands
	}
	loc, msg := notBool(tree.Node, "")
	if msg == "" {
		return nil
	}
	e := (&file.Error{Location: loc, Message: "expected bool, but " + msg}).Bind(file.NewSource(src))
	return syntaxError(e)
}

// compareHint is the fix notBool suggests for a step that is a value, not
// a condition.
const compareHint = `compare it (say, > 0 or == "x")`

// notBool returns where a step that gives n's result stands and why it is
// not a condition (the message after "expected bool, but "): n itself,
// the result of a let's sequence, either branch of a conditional, either
// side of ??; "" if none is. where names the place n has in its parent
// for the message ("" for the whole expression, which the checker has
// already seen is not of a known other type).
func notBool(n ast.Node, where string) (file.Location, string) {
	switch n := n.(type) {
	case *ast.BinaryNode:
		switch n.Operator {
		case "+", "-", "*", "/", "%", "**", "^":
			return n.Location(), fmt.Sprintf("%q gives a number or a string: %s", n.Operator, compareHint)
		case "??":
			if loc, msg := notBool(n.Left, "the value before ??"); msg != "" {
				return loc, msg
			}
			return notBool(n.Right, "the fallback after ??")
		}
	case *ast.UnaryNode:
		if n.Operator == "-" || n.Operator == "+" {
			return n.Location(), fmt.Sprintf("%q gives a number: %s", n.Operator, compareHint)
		}
	case *ast.VariableDeclaratorNode:
		return notBool(n.Expr, where)
	case *ast.SequenceNode:
		if len(n.Nodes) > 0 {
			return notBool(n.Nodes[len(n.Nodes)-1], where)
		}
		return file.Location{}, ""
	case *ast.ConditionalNode:
		if loc, msg := notBool(n.Exp1, "a branch"); msg != "" {
			return loc, msg
		}
		return notBool(n.Exp2, "a branch")
	case *ast.SliceNode:
		return n.Location(), fmt.Sprintf("the slice [:] gives a string or a list: %s", compareHint)
	case *ast.NilNode:
		return file.Location{}, ""
	}
	if where == "" {
		return file.Location{}, ""
	}
	what := ""
	switch t := n.Type(); t.Kind() {
	case reflect.Bool, reflect.Interface:
		return file.Location{}, ""
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8,
		reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr, reflect.Float32, reflect.Float64:
		what = "a number"
	case reflect.String:
		what = "a string"
	case reflect.Slice, reflect.Array:
		what = "a list"
	case reflect.Map:
		what = "a map"
	default:
		what = "a " + t.String()
	}
	hint := compareHint
	if where == "the fallback after ??" {
		hint = "write ?? false, or compare (say, (body.n ?? 0) > 0)"
	}
	return n.Location(), fmt.Sprintf("%s is %s, never true or false: %s", where, what, hint)
}

// CompileValue compiles an expression whose result may be anything: a
// route's transform or a source's dedup_key.
func CompileValue(src string) (*Program, error) {
	return compileFast(src)
}

// compileFast compiles src with the fetch shortcut of fetch.go. An
// expression that does not compile is compiled again without it, so that
// the error is expr's own to the letter: with the shortcut, a member access
// on an unknown value is typed "interface {}" in messages, not "unknown".
func compileFast(src string, opts ...expr.Option) (*Program, error) {
	if compileHook != nil {
		compileHook(src)
	}
	base := append(baseOptions(), opts...)
	fast := append(slices.Clip(base), fetchOptions()...)
	if _, err := expr.Compile(src, fast...); err != nil {
		return compile(src, base)
	}
	// Only an expression that compiles gets the budget's patches, so
	// that compile errors stay expr's own (the patches would turn some
	// type errors into runtime ones).
	return compile(src, append(slices.Clip(fast), budgetOptions()...))
}

func compile(src string, opts []expr.Option) (*Program, error) {
	p, err := expr.Compile(src, opts...)
	if err != nil {
		return nil, syntaxError(err)
	}
	return &Program{src: src, prog: p}, nil
}

func syntaxError(err error) *SyntaxError {
	var fe *file.Error
	if errors.As(err, &fe) {
		line, col := fe.Line, fe.Column+1 // expr's column is 0-based
		if line < 1 {
			line = 1
		}
		return &SyntaxError{Line: line, Column: col, Msg: fe.Message}
	}
	return &SyntaxError{Line: 1, Column: 1, Msg: err.Error()}
}

// Source returns the expression as it was written.
func (p *Program) Source() string { return p.src }

// Value evaluates the expression over env.
func (p *Program) Value(env *Env) (any, error) {
	return p.ValueContext(context.Background(), env)
}

// ValueContext is [Program.Value] that stops, with a [*BudgetError], once
// ctx is done.
func (p *Program) ValueContext(ctx context.Context, env *Env) (any, error) {
	// The result goes back to the caller, and an expression can return
	// its environment ($env): it gets an evaluation of its own, not the
	// pooled runner's.
	r := runners.Get().(*runner)
	out, err := p.run(&r.vm, newEvaluation(ctx, env))
	r.release()
	return out, err
}

// evaluation is what runs of programs over one event hold: a copy of the
// caller's Env pointing to a budget that each run starts afresh (held by a
// pooled runner, or one allocation for both).
type evaluation struct {
	env    Env
	budget budget
}

func newEvaluation(ctx context.Context, env *Env) *evaluation {
	ev := &evaluation{env: *env}
	ev.budget.ctx = ctx
	ev.env.budget = &ev.budget
	return ev
}

// run evaluates the expression on v, a VM the caller holds, under a
// budget of [MaxOps] operations, [MaxBytes] bytes and expr's
// MemoryBudget; it stops when ctx is done. A runtime error says what
// failed and where, without the values of the event: quoted text in it
// is replaced by "…".
func (p *Program) run(v *vm.VM, ev *evaluation) (any, error) {
	ev.budget.ops, ev.budget.bytes = 0, 0
	env := &ev.env
	out, err := v.Run(p.prog, env)
	if err == nil {
		return out, nil
	}
	// errors.AsType finds without allocating, as errors.As did not.
	fe, ok := errors.AsType[*file.Error](err)
	if !ok {
		return nil, errors.New(redact(err.Error(), env))
	}
	if be, ok := errors.AsType[*BudgetError](err); ok {
		return nil, &BudgetError{Msg: fmt.Sprintf("%s (%d:%d)", be.Msg, fe.Line, fe.Column+1), Cause: be.Cause}
	}
	if fe.Message == "memory budget exceeded" {
		return nil, &BudgetError{Msg: fmt.Sprintf("memory budget exceeded: the expression builds too much for one event (%d:%d)", fe.Line, fe.Column+1)}
	}
	// Keep the message and position, drop the multi-line snippet
	// (it quotes the expression, not the event) and the values.
	msg, line, col := redact(fe.Message, env), fe.Line, fe.Column+1
	if l := p.last.Load(); l != nil && l.msg == msg && l.line == line && l.col == col {
		return nil, l.err
	}
	err = errors.New(msg + " (" + strconv.Itoa(line) + ":" + strconv.Itoa(col) + ")") // fmt.Errorf("%s (%d:%d)") without fmt
	p.last.Store(&lastError{msg: msg, line: line, col: col, err: err})
	return nil, err
}

// quoted matches a quoted string in an error message: Go's "..." and
// `...`, as strconv, time and regexp errors quote the text they refused.
var quoted = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|`[^`]*`")

// redact replaces the quoted text of an error message, and every string
// (3 bytes or more) and number (4 characters or more) of env's body and
// headers that the message holds, by "…", so that a rule error logged or
// answered carries no value of the event. It runs on errors only.
func redact(msg string, env *Env) string {
	if strings.ContainsAny(msg, "\"`") { // the regexp's allocations only when it can match
		msg = quoted.ReplaceAllString(msg, `"…"`)
	}
	if env == nil {
		return msg
	}
	r := redactor{msg: msg}
	r.walk(env.Body)
	for _, h := range env.Headers {
		r.walkString(h)
	}
	return r.msg
}

// redactor is one redact's walk over an event: it replaces in msg the
// values of the event that msg holds, allocating only when it does (an
// error message rarely quotes the event: that is the common case, on
// every event a rule fails on). TestRedactSame holds it to the closure it
// replaced, which formatted every number it met.
type redactor struct {
	msg    string
	leaves int
}

func (r *redactor) walk(v any) {
	if r.leaves > 100000 {
		return
	}
	r.leaves++
	switch x := v.(type) {
	case string:
		r.replace(x)
	case float64:
		var fb, gb [32]byte
		f := strconv.AppendFloat(fb[:0], x, 'f', -1, 64)
		s := unsafe.String(unsafe.SliceData(f), len(f)) // only read, while fb lives
		if len(s) < 4 {
			s = ""
		}
		// fmt.Sprint's form of a float64 is %g's shortest.
		g := strconv.AppendFloat(gb[:0], x, 'g', -1, 64)
		if gs := unsafe.String(unsafe.SliceData(g), len(g)); gs != s && len(gs) >= 4 && strings.Contains(r.msg, gs) {
			r.msg = strings.ReplaceAll(r.msg, gs, "…")
		}
		r.replace(s)
	case int64: // an integer id no float64 holds (see ingest.Decode)
		r.replace(strconv.FormatInt(x, 10))
	case map[string]any:
		for _, e := range x {
			r.walk(e)
		}
	case []any:
		for _, e := range x {
			r.walk(e)
		}
	}
}

// walkString is walk of a string, without boxing it.
func (r *redactor) walkString(s string) {
	if r.leaves > 100000 {
		return
	}
	r.leaves++
	r.replace(s)
}

func (r *redactor) replace(s string) {
	if len(s) >= 3 && strings.Contains(r.msg, s) {
		r.msg = strings.ReplaceAll(r.msg, s, "…")
	}
}

// Bool evaluates the expression as a condition: nil is false, a non-bool
// result is an error.
func (p *Program) Bool(env *Env) (bool, error) {
	return p.BoolContext(context.Background(), env)
}

// BoolContext is [Program.Bool] that stops, with a [*BudgetError], once
// ctx is done.
func (p *Program) BoolContext(ctx context.Context, env *Env) (bool, error) {
	r := getRunner(ctx, env)
	ok, err := p.runBool(&r.vm, &r.ev)
	r.release()
	return ok, err
}

func (p *Program) runBool(v *vm.VM, ev *evaluation) (bool, error) {
	out, err := p.run(v, ev)
	if err != nil {
		return false, err
	}
	switch b := out.(type) {
	case bool:
		return b, nil
	case nil:
		return false, nil
	default:
		return false, fmt.Errorf("expected bool, got %T", out)
	}
}

// String evaluates the expression as a dedup key, which keeps its type:
// 1, 1.0, "1", true and "true" are five keys. A string is the key as it is
// unless it starts with "(": then it is "(string)" followed by the string.
// Other values are "(type)" followed by their text: an int 1 is "(int)1",
// a float64 1 (what a JSON number is to rules) "(float)1", a JSON integer
// from 2⁵³ up to int64's largest (an int64 to rules) "(int)…", a bool
// "(bool)true", a json.Number "(number)…" (a JSON number out of float64's
// range is its text, a string, to rules). nil is "" (no key). Maps,
// arrays and other values are an error. No string key starts with
// "(sha256)", the prefix of a key that the event log hashes because it is
// long.
func (p *Program) String(env *Env) (string, error) {
	return p.StringContext(context.Background(), env)
}

// StringContext is [Program.String] that stops, with a [*BudgetError],
// once ctx is done.
func (p *Program) StringContext(ctx context.Context, env *Env) (string, error) {
	r := getRunner(ctx, env)
	defer r.release()
	out, err := p.run(&r.vm, &r.ev)
	if err != nil {
		return "", err
	}
	return keyString(out) // before release: out may be the runner's $env
}

// StringKey is the dedup key of the string s, as [Program.String] makes
// it: s itself unless s starts with "(", else "(string)"+s. Keys read from
// a header go through it too, so that they cannot meet typed or hashed
// keys.
func StringKey(s string) string {
	if strings.HasPrefix(s, "(") {
		return "(string)" + s
	}
	return s
}

func keyString(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return StringKey(x), nil
	case bool:
		return "(bool)" + strconv.FormatBool(x), nil
	case int:
		return "(int)" + strconv.Itoa(x), nil
	case int64:
		return "(int)" + strconv.FormatInt(x, 10), nil
	case int32:
		return "(int)" + strconv.FormatInt(int64(x), 10), nil
	case uint:
		return "(int)" + strconv.FormatUint(uint64(x), 10), nil
	case uint64:
		return "(int)" + strconv.FormatUint(x, 10), nil
	case float64:
		return formatFloat(x)
	case float32:
		return formatFloat(float64(x))
	case json.Number:
		return "(number)" + x.String(), nil
	default:
		return "", fmt.Errorf("dedup key must be a string, number or bool, got %T", v)
	}
}

func formatFloat(f float64) (string, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "", fmt.Errorf("dedup key is %v", f)
	}
	return "(float)" + strconv.FormatFloat(f, 'f', -1, 64), nil
}

// RouteError is an error of one route's expression on one event, as
// [Router.Route] returns it; callers read Route with errors.As, e.g. to
// count failures per route.
type RouteError struct {
	// Route names the [[route]]; Expr is "when" or "transform".
	Route, Expr string
	Err         error
}

// Error returns "route <name> <expr>: <err>".
func (e *RouteError) Error() string { return "route " + e.Route + " " + e.Expr + ": " + e.Err.Error() }

// Unwrap returns the expression's error.
func (e *RouteError) Unwrap() error { return e.Err }

// Route is one [[route]] of the configuration.
type Route struct {
	Name      string
	When      string
	Transform string
	To        []string
}

type route struct {
	name      string
	when      int      // index in Router.whens
	transform *Program // nil: deliver the body as it is
	to        []string
	// lastErr is the RouteError of this route's when returned last: a
	// when that fails the same way on every event (its Program returns
	// the same error) gets the same RouteError.
	lastErr *atomic.Pointer[RouteError]
}

// Router evaluates every route over an event. It is safe for concurrent use.
type Router struct {
	routes []route
	// whens are the distinct when expressions: routes that share one (as
	// fan-out configurations often do) have it evaluated once per event.
	whens []*Program
	// sinks is how many distinct sinks the routes name: the most targets
	// one event can have.
	sinks int
}

// CompiledRoute is one [[route]] whose expressions are compiled already:
// When by [CompileBool], Transform by [CompileValue] (nil: the sink gets
// the body as it is).
type CompiledRoute struct {
	Name      string
	When      *Program
	Transform *Program
	To        []string
}

// NewRouter compiles every route's when and transform. It reports every
// route that does not compile, each error naming the route and the
// expression ("route \"x\": when: ...") and wrapping a [*SyntaxError].
// Routes with the same when text share one compiled program.
func NewRouter(routes []Route) (*Router, error) {
	compiled := make([]CompiledRoute, 0, len(routes))
	var errs []error
	whens := map[string]*Program{}
	for _, rt := range routes {
		w, ok := whens[rt.When]
		if !ok {
			var err error
			if w, err = CompileBool(rt.When); err != nil {
				errs = append(errs, fmt.Errorf("route %q: when: %w", rt.Name, err))
			} else {
				whens[rt.When] = w
			}
		}
		var tr *Program
		if rt.Transform != "" {
			var err error
			if tr, err = CompileValue(rt.Transform); err != nil {
				errs = append(errs, fmt.Errorf("route %q: transform: %w", rt.Name, err))
			}
		}
		compiled = append(compiled, CompiledRoute{Name: rt.Name, When: w, Transform: tr, To: rt.To})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return NewRouterOf(compiled), nil
}

// NewRouterOf returns a router over routes compiled already, in their
// order. Routes whose when has the same text have it evaluated once per
// event. Every When must be set.
func NewRouterOf(routes []CompiledRoute) *Router {
	r := &Router{routes: make([]route, 0, len(routes))}
	whens := map[string]int{}
	for _, rt := range routes {
		w, ok := whens[rt.When.Source()]
		if !ok {
			w = len(r.whens)
			whens[rt.When.Source()] = w
			r.whens = append(r.whens, rt.When)
		}
		r.routes = append(r.routes, route{name: rt.Name, when: w, transform: rt.Transform, to: append([]string(nil), rt.To...),
			lastErr: new(atomic.Pointer[RouteError])})
	}
	sinks := map[string]bool{}
	for _, rt := range routes {
		for _, s := range rt.To {
			sinks[s] = true
		}
	}
	r.sinks = len(sinks)
	return r
}

// Exprs calls f with each route's name and each kind of expression the
// route has: "when", and "transform" when it has one, in route order.
func (r *Router) Exprs(f func(route, expr string)) {
	for _, rt := range r.routes {
		f(rt.name, "when")
		if rt.transform != nil {
			f(rt.name, "transform")
		}
	}
}

// Matched returns the name of every route whose when is true for env, in
// route order, even a route that adds no target because earlier routes
// deliver to its sinks already. A when that fails counts as false; [Route]
// reports its error.
func (r *Router) Matched(env *Env) []string {
	run := getRunner(context.Background(), env)
	defer run.release()
	isTrue := make([]bool, len(r.whens))
	for i, w := range r.whens {
		isTrue[i], _ = w.runBool(&run.vm, &run.ev)
	}
	var names []string
	for _, rt := range r.routes {
		if isTrue[rt.when] {
			names = append(names, rt.name)
		}
	}
	return names
}

// Route evaluates every route's when; there is no first match (fan-out).
// Each sink named in a matching route's To gets one [pipeline.Target], in
// route order and then To order. A sink gets at most one target: when
// several matching routes name the same sink, the first route in file order
// wins, and later routes add nothing for that sink (their transform is not
// even evaluated when they have no new sink).
//
// Payload is the JSON encoding of the route's transform result, or nil when
// the route has no transform. A runtime error in a when means no match for
// that route; it is returned in errs and the other routes go on. A runtime
// error in a transform (or a result that JSON cannot encode) gives targets
// with Err set to "route NAME transform: ERROR", so that the event lands in
// those sinks' dead-letter queues, and is returned in errs as well.
func (r *Router) Route(env *Env) (targets []pipeline.Target, errs []error) {
	return r.RouteContext(context.Background(), env)
}

// RouteContext is [Router.Route] whose evaluations stop, each with a
// [*BudgetError], once ctx is done.
func (r *Router) RouteContext(ctx context.Context, env *Env) (targets []pipeline.Target, errs []error) {
	run := getRunner(ctx, env)
	defer run.release()
	v, ev := &run.vm, &run.ev
	// Each distinct when is evaluated once: 0 not yet, 1 false, 2 true, 3 error.
	var small [64]uint8
	var state []uint8
	if len(r.whens) <= len(small) {
		state = small[:len(r.whens)]
	} else {
		state = make([]uint8, len(r.whens))
	}
	var whenErrs []error // by when, made at the first error
	var smallErrs [8]error
	for i := range r.routes {
		rt := &r.routes[i]
		if state[rt.when] == 0 {
			ok, err := r.whens[rt.when].runBool(v, ev)
			switch {
			case err != nil:
				state[rt.when] = 3
				if whenErrs == nil {
					if len(r.whens) <= len(smallErrs) {
						whenErrs = smallErrs[:len(r.whens)]
					} else {
						whenErrs = make([]error, len(r.whens))
					}
				}
				whenErrs[rt.when] = err
			case ok:
				state[rt.when] = 2
			default:
				state[rt.when] = 1
			}
		}
		ok := state[rt.when] == 2
		var err error
		if state[rt.when] == 3 {
			err = whenErrs[rt.when]
		}
		if err != nil {
			// The errors of runBool are pointers (comparable): the same
			// one means the same failure as last time.
			re := rt.lastErr.Load()
			if re == nil || re.Err != err {
				re = &RouteError{Route: rt.name, Expr: "when", Err: err}
				rt.lastErr.Store(re)
			}
			errs = append(errs, re)
			continue
		}
		if !ok {
			continue
		}
		first := len(targets)
		if targets == nil {
			targets = make([]pipeline.Target, 0, r.sinks) // one allocation, not one per doubling
		}
		for _, s := range rt.to {
			if !hasSink(targets, s) {
				targets = append(targets, pipeline.Target{Sink: s, Route: rt.name})
			}
		}
		if rt.transform == nil || first == len(targets) {
			continue
		}
		payload, err := rt.payload(v, ev)
		for j := first; j < len(targets); j++ {
			if err != nil {
				targets[j].Err = err.Error()
			} else {
				targets[j].Payload = payload
			}
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return targets, errs
}

// payload evaluates rt's transform and encodes its result as JSON,
// stopping as soon as the encoding passes [MaxPayload].
func (rt *route) payload(vm *vm.VM, ev *evaluation) ([]byte, error) {
	v, err := rt.transform.run(vm, ev)
	if err != nil {
		return nil, &RouteError{Route: rt.name, Expr: "transform", Err: err}
	}
	b, err := marshalLimit(v, MaxPayload)
	if errors.Is(err, errTooBig) {
		return nil, &RouteError{Route: rt.name, Expr: "transform", Err: fmt.Errorf(
			"output is larger than the limit of %d bytes (stopped while encoding)", MaxPayload)}
	}
	if err != nil {
		return nil, &RouteError{Route: rt.name, Expr: "transform", Err: errors.New(redact(err.Error(), &ev.env))}
	}
	return b, nil
}

func hasSink(ts []pipeline.Target, sink string) bool {
	for i := range ts {
		if ts[i].Sink == sink {
			return true
		}
	}
	return false
}
