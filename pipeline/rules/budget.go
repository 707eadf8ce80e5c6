package rules

import (
	"context"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/vm/runtime"
)

// MaxOps bounds the operations of one evaluation: every turn of a closure
// (all, any, map, filter, reduce, sortBy, ...) costs one, and x in y costs
// the length of y. Measured on the CI machine, a closure turn costs 30 to
// 60 ns, so an expression that goes over stops within about 15 ms.
const MaxOps = 1 << 18

// MaxBytes bounds the bytes of strings (and, counted at 16 bytes an
// element, of arrays) that one evaluation builds with +, repeat, join,
// replace, split, concat, flatten, string and toJSON. Together with
// MemoryBudget (expr's own count of what ranges, array and map literals
// build) it bounds what an evaluation can allocate.
const MaxBytes = 4 << 20

// BudgetError is the error of an evaluation that went over [MaxOps] or
// [MaxBytes], or whose context was cancelled. It names no value of the
// event.
type BudgetError struct {
	// Msg says which bound was passed.
	Msg string
	// Cause is the context's error when the evaluation was cancelled.
	Cause error
}

// Error returns Msg.
func (e *BudgetError) Error() string { return e.Msg }

// Unwrap returns Cause.
func (e *BudgetError) Unwrap() error { return e.Cause }

var (
	errOps   = &BudgetError{Msg: fmt.Sprintf("operation budget of %d exceeded: the expression does too much work for one event", MaxOps)}
	errBytes = &BudgetError{Msg: fmt.Sprintf("memory budget of %d bytes exceeded: the expression builds too much for one event", MaxBytes)}
)

// budget is what one evaluation has used. Each evaluation gets its own
// (see Program.run), held by the copy of Env it runs over.
type budget struct {
	ops, bytes int64
	ctx        context.Context
	// pattern and re are the last pattern a matcher compiled at run time
	// in this evaluation, and what it compiled to: a closure that matches
	// against the same built pattern compiles it once.
	pattern string
	re      *regexp.Regexp
}

func budgetOf(env any) *budget {
	if e, ok := env.(*Env); ok && e.budget != nil {
		return e.budget
	}
	// Not run by Program.run (cannot happen): a budget of its own still
	// bounds this call.
	return &budget{}
}

func (b *budget) op(n int64) {
	b.ops += n
	if b.ops > MaxOps {
		panic(errOps)
	}
	if b.ctx != nil && (b.ops&1023 < n || n > 1023) {
		if err := b.ctx.Err(); err != nil {
			panic(&BudgetError{Msg: "evaluation stopped: " + err.Error(), Cause: err})
		}
	}
}

// ahead charges n operations for work that cannot be stopped once it
// runs (a regexp's match or compile): when they would go over the budget,
// it stops the evaluation before the work, with nothing charged.
func (b *budget) ahead(n int64) {
	if n > MaxOps-b.ops {
		panic(errOps)
	}
	b.op(n)
}

func (b *budget) mem(n int64) {
	if n < 0 || n > MaxBytes || b.bytes+n > MaxBytes {
		panic(errBytes)
	}
	b.bytes += n
}

// operand is v as expr's own operators and builtins take it: they
// dereference a pointer (OpDeref), and the one pointer an expression can
// reach is its environment, $env, which Program.run passes as *Env. Without
// this, `$env + 1` failed with "*rules.Env + int" where expr says
// "rules.Env + int" (found by FuzzFetchPatch).
func operand(v any) any {
	if e, ok := v.(*Env); ok {
		return *e
	}
	return v
}

// tick is called (as tick($env)) at every turn of a closure.
func tick(env any) bool {
	budgetOf(env).op(1)
	return true
}

// plus is a + b where a or b may be a string: the bytes of a
// concatenation are charged before it is made.
func plus(args ...any) any {
	a, b := operand(args[1]), operand(args[2])
	if sa, ok := a.(string); ok {
		if sb, ok := b.(string); ok {
			budgetOf(args[0]).mem(int64(len(sa)) + int64(len(sb)))
			return sa + sb
		}
	}
	return runtime.Add(a, b)
}

// matchCost is how many bytes of input times bytes of pattern Go's
// regexp gets through, at worst, in the time of one operation: its
// automaton costs at most about 6.5 ns per byte of input per byte of
// pattern (measured: "A"×100,000 against "A?"×200+"B", 234 ms), an
// operation about 50.
const matchCost = 8

// compileCost is the operations that compiling one byte of a pattern
// built at run time costs: a repetition such as [a-z]{1,100} makes
// compiling take up to ~20 µs a byte (60 KB of them: 1.18 s), an
// operation about 50 ns.
const compileCost = 256

// matcher returns a matches b, which costs len(a) × len(b) / matchCost
// operations, charged before it runs: Go's regexp is linear in both, but
// a megabyte against a pattern of thousands of characters takes seconds,
// and a match cannot be stopped once it runs. literal is b compiled when b
// is a literal, else nil: b is then compiled at the call, as expr does, for
// len(b) × compileCost more (once per evaluation for the same b).
func matcher(literal *regexp.Regexp) func(args ...any) any {
	return func(args ...any) any {
		a, b := operand(args[1]), operand(args[2])
		if runtime.IsNil(a) || runtime.IsNil(b) {
			return false
		}
		var n int64
		switch a := a.(type) {
		case string:
			n = int64(len(a))
		case []byte:
			n = int64(len(a))
		}
		// A pattern that is no string fails as it does in expr's own
		// matches (TestFetchPatchIsEquivalent holds the two alike), before
		// a pattern compiled earlier in this evaluation could be taken.
		p := b.(string)
		bu := budgetOf(args[0])
		bu.ahead(n*int64(max(len(p), 1))/matchCost + 1)
		re := literal // shared by every evaluation: never written here
		if re == nil && bu.re != nil && bu.pattern == p {
			re = bu.re
		}
		if re == nil {
			bu.ahead(int64(len(p)) * compileCost)
			var err error
			if re, err = regexp.Compile(p); err != nil {
				panic(err)
			}
			bu.pattern, bu.re = p, re
		}
		if s, ok := a.(string); ok {
			return re.MatchString(s)
		}
		return re.Match(a.([]byte))
	}
}

// in is a in b where b is not a literal: it costs len(b) operations.
func in(args ...any) any {
	b := operand(args[2])
	switch v := b.(type) {
	case []any:
		budgetOf(args[0]).op(int64(len(v)))
	case nil, map[string]any, string:
	default:
		if rv := reflect.ValueOf(b); rv.Kind() == reflect.Slice || rv.Kind() == reflect.Array {
			budgetOf(args[0]).op(int64(rv.Len()))
		}
	}
	return runtime.In(operand(args[1]), b)
}

// charged are the builtins that can build big values from small ones;
// they are called through callBuiltin, which charges what they will build
// before they build it.
var charged = map[string]bool{
	"repeat": true, "join": true, "replace": true, "toJSON": true, "string": true,
	"split": true, "splitAfter": true, "concat": true, "flatten": true,
	"upper": true, "lower": true, "toBase64": true, "fromJSON": true,
	// These walk an array (or map) in one call: len(x) operations, and
	// 16 bytes an element for those that build one.
	"sort": true, "uniq": true, "reverse": true, "mean": true, "median": true,
	"keys": true, "values": true, "toPairs": true, "fromPairs": true,
}

// callBuiltin calls builtin args[1] with args[2:], charging first what
// its result costs.
func callBuiltin(args ...any) any {
	b := budgetOf(args[0])
	name := args[1].(string)
	in := args[2:]
	for i, a := range in {
		in[i] = operand(a)
	}
	b.mem(cost(b, name, in))
	fn := builtin.Builtins[builtin.Index[name]]
	var out any
	var err error
	switch {
	case fn.Func != nil:
		out, err = fn.Func(in...)
	case fn.Safe != nil:
		out, _, err = fn.Safe(in...)
	case fn.Fast != nil && len(in) == 1:
		out = fn.Fast(in[0])
	default:
		err = fmt.Errorf("%s: cannot be called here", name)
	}
	if err != nil {
		panic(err)
	}
	return out
}

// cost is an upper bound of the bytes builtin name builds from args.
func cost(b *budget, name string, args []any) int64 {
	str := func(i int) string {
		if i < len(args) {
			s, _ := args[i].(string)
			return s
		}
		return ""
	}
	switch name {
	case "repeat":
		n := int64(runtime.ToInt(args[1]))
		if n <= 0 {
			return 0
		}
		l := int64(len(str(0)))
		if l > 0 && n > MaxBytes/l+1 {
			panic(errBytes)
		}
		return l * n
	case "join":
		var n int64
		parts := 0
		switch v := args[0].(type) {
		case []any:
			for _, e := range v {
				if s, ok := e.(string); ok {
					n += int64(len(s))
				}
			}
			parts = len(v)
		case []string:
			for _, s := range v {
				n += int64(len(s))
			}
			parts = len(v)
		}
		return n + int64(parts)*int64(len(str(1)))
	case "replace":
		s, old, repl := str(0), str(1), str(2)
		if old == "" {
			return int64(len(s)) + int64(utf8.RuneCountInString(s)+1)*int64(len(repl))
		}
		return int64(len(s)) + int64(strings.Count(s, old))*int64(len(repl))
	case "split", "splitAfter":
		s, sep := str(0), str(1)
		parts := int64(utf8.RuneCountInString(s))
		if sep != "" {
			parts = int64(strings.Count(s, sep)) + 1
		}
		b.op(parts)
		return int64(len(s)) + 16*parts
	case "upper", "lower", "toBase64":
		return 2 * int64(len(str(0)))
	case "fromJSON":
		// What decoding builds: ~18 times the text live (a boxed value
		// and its slot per two bytes of "[0,0,...]"), counted at 16.
		return 16 * int64(len(str(0)))
	case "toJSON", "string":
		if s, ok := args[0].(string); ok {
			return 2 * int64(len(s))
		}
		n, err := jsonSize(args[0], min((MaxBytes-b.bytes)/3, 2<<20))
		if err != nil {
			panic(errBytes)
		}
		return 3 * n // toJSON indents; string() prints Go syntax
	case "sort", "uniq", "reverse", "keys", "values", "toPairs", "fromPairs":
		n := length(args)
		b.op(n)
		return 16 * n
	case "mean", "median":
		b.op(length(args))
		return 0
	case "concat", "flatten":
		n := elements(args, MaxBytes/16)
		b.op(n)
		return 16 * n
	}
	return 0
}

// length is the length of args[0] when it is an array or a map, else 0.
func length(args []any) int64 {
	if len(args) == 0 {
		return 0
	}
	switch v := args[0].(type) {
	case []any:
		return int64(len(v))
	case map[string]any:
		return int64(len(v))
	}
	rv := reflect.ValueOf(args[0])
	switch rv.Kind() {
	case reflect.Slice, reflect.Array, reflect.Map:
		return int64(rv.Len())
	}
	return 0
}

// elements counts the elements of arrays in args, nested ones included,
// up to limit (then it panics with errBytes).
func elements(args []any, limit int64) int64 {
	var n int64
	var walk func(v any)
	walk = func(v any) {
		rv := reflect.ValueOf(v)
		if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
			return
		}
		n += int64(rv.Len())
		if n > limit {
			panic(errBytes)
		}
		for i := 0; i < rv.Len(); i++ {
			walk(rv.Index(i).Interface())
		}
	}
	for _, a := range args {
		walk(a)
	}
	return n
}

// budgetOptions make every evaluation count its work: see budgetPatcher.
func budgetOptions() []expr.Option {
	return []expr.Option{expr.Patch(budgetPatcher{})}
}

// budgetPatcher rewrites an expression so that it counts its work as it
// runs:
//   - the body of every closure becomes tick($env); body;
//   - a + b, where a or b is a string or of unknown type, becomes a call of
//     plus, which charges the bytes of a concatenation before making it;
//   - a in b, where b is not a literal array, becomes a call of in, which
//     charges len(b) operations;
//   - a matches b becomes a call of a matcher, which charges
//     len(a) × len(b) / matchCost operations;
//   - the builtins in charged become calls of callBuiltin.
//
// The functions are constant nodes, not names, so expressions cannot call
// them; $env is the Env copy that Program.run made for this evaluation.
// It runs only on expressions that compiled without it, so that errors
// stay expr's own.
type budgetPatcher struct{}

func envNode() ast.Node { return &ast.IdentifierNode{Value: "$env"} }

func (budgetPatcher) Visit(node *ast.Node) {
	loc := (*node).Location()
	switch n := (*node).(type) {
	case *ast.PredicateNode:
		call := &ast.CallNode{Callee: &ast.ConstantNode{Value: tick}, Arguments: []ast.Node{envNode()}}
		call.SetLocation(loc)
		seq := &ast.SequenceNode{Nodes: []ast.Node{call, n.Node}}
		seq.SetLocation(n.Node.Location())
		n.Node = seq
	case *ast.BinaryNode:
		var fn func(...any) any
		switch n.Operator {
		case "+":
			if !maybeString(n.Left) && !maybeString(n.Right) {
				return
			}
			fn = plus
		case "in":
			if _, ok := n.Right.(*ast.ArrayNode); ok {
				return // expr turns x in [literals] into a set lookup
			}
			if t := n.Right.Type(); t != nil && (t.Kind() == reflect.Map || t.Kind() == reflect.Struct) {
				return
			}
			fn = in
		case "matches":
			var re *regexp.Regexp
			if lit, ok := n.Right.(*ast.StringNode); ok {
				re, _ = regexp.Compile(lit.Value) // the checker compiled it already
			}
			fn = matcher(re)
		default:
			return
		}
		call := &ast.CallNode{Callee: &ast.ConstantNode{Value: fn}, Arguments: []ast.Node{envNode(), n.Left, n.Right}}
		call.Callee.SetLocation(loc)
		ast.Patch(node, call)
	case *ast.BuiltinNode:
		if !charged[n.Name] {
			return
		}
		args := append([]ast.Node{envNode(), &ast.StringNode{Value: n.Name}}, n.Arguments...)
		call := &ast.CallNode{Callee: &ast.ConstantNode{Value: callBuiltin}, Arguments: args}
		call.Callee.SetLocation(loc)
		ast.Patch(node, call)
	}
}

func maybeString(n ast.Node) bool {
	t := n.Type()
	return t == nil || t.Kind() == reflect.Interface || t.Kind() == reflect.String
}
