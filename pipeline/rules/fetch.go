package rules

import (
	"reflect"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm/runtime"
)

// fetchOptions make expr use fastFetch for member access on values of
// unknown type, which is what every access below body is: expr compiles
// them to OpFetch, whose runtime.Fetch works through reflect even for the
// map[string]any that encoding/json decodes objects into.
func fetchOptions() []expr.Option {
	return []expr.Option{expr.Patch(fetchPatcher{})}
}

// fastFetch is runtime.Fetch with a shortcut for map[string]any. A map
// without the key gives nil, as runtime.Fetch gives the zero value of the
// map's element type. Everything else goes to runtime.Fetch itself, so its
// results and panics (which the VM turns into errors placed at the call,
// that is, at the member access it replaces) are expr's own.
//
// Its type is one of expr's vm.FuncTypes, so the VM calls it with
// OpCallTyped: no reflect and no argument slice.
func fastFetch(from, i any) any {
	if m, ok := from.(map[string]any); ok {
		if k, ok := i.(string); ok {
			return m[k]
		}
	}
	return runtime.Fetch(from, i)
}

// fetchPatcher rewrites a.b and a["b"] into fastFetch(a, "b") where a is
// of unknown type (any) to the checker, the access is not optional (a?.b
// keeps expr's own jump over the fetch) and not a method call (a.b()).
// Location is kept, so runtime errors point where they did. The function
// is a constant node, not a name, so expressions cannot call it.
type fetchPatcher struct{}

func (fetchPatcher) Visit(node *ast.Node) {
	m, ok := (*node).(*ast.MemberNode)
	if !ok || m.Optional || m.Method {
		return
	}
	prop, ok := m.Property.(*ast.StringNode)
	if !ok {
		return
	}
	if id, ok := m.Node.(*ast.IdentifierNode); ok && id.Value == "$env" {
		return
	}
	nt := m.Node.Nature()
	if nt == nil || nt.Nil {
		return
	}
	if t := nt.Type; t != nil && (t.Kind() != reflect.Interface || t.NumMethod() != 0) {
		return
	}
	call := &ast.CallNode{
		Callee:    &ast.ConstantNode{Value: fastFetch},
		Arguments: []ast.Node{m.Node, &ast.StringNode{Value: prop.Value}},
	}
	call.Callee.SetLocation(m.Location())
	call.Arguments[1].SetLocation(prop.Location())
	ast.Patch(node, call)
}
