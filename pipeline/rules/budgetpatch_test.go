package rules

import (
	"testing"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
)

// TestBudgetPatchKeepsMeaning: the budget's patches change neither which
// expressions compile nor what they give (the patched + returns any where
// expr knew string, which every use of a string accepts).
func TestBudgetPatchKeepsMeaning(t *testing.T) {
	env := &Env{Source: "s", Headers: map[string]string{"a": "b"}, Body: map[string]any{"a": "x"}}
	for _, src := range []string{`upper("a" + "b")`, `trim(source + "y")`, `("a"+"b") startsWith "a"`, `split("a"+",b", ",")`, `repeat("a"+"b", 2)`, `"a" + "b" == "ab"`, `date("2025-01-01" + "T00:00:00Z")`, `len("a"+"b")`, `int("1"+"2")`, `duration("1"+"s")`, `fromJSON("{" + "}")`, `lower(join(["a"], ",") + "b")`, `("a"+"b")[0:1]`, `("a"+"b")[0]`, `source + "x" in ["ax"]`, `toJSON(body) + "x"`, `replace(source + "a", "a", "b")`, `upper(toJSON(1))`, `trimPrefix(string(1) + "a", "1")`, `indexOf(source + "a", "a")`, `hasPrefix(upper(source), "A")`, `sum(map(1..3, #)) + 1`, `let x = "a" + "b"; x + x`, `"a" + "b" matches "a"`, `len(split(source, "") + ["a"])`, `concat([1], [2])[0] + 1`, `flatten([[1]])[0] + 1`, `body?.a + "x"`, `"x" + headers["a"]`, `[source + "a"] | map(# + "b") | join(",")`, `count(1..3, # > 1) + 1`, `reduce(1..3, #acc + #, 0)`, `"a" in body`, `1 in [1,2]`, `"a" in {"a": 1}`, `source in headers`,
		`sort([3, 1, 2])[0]`, `sort(["b", "a"], "desc")`, `uniq([1, 1, 2])`, `sum([1, 2.5])`, `mean([1, 2])`, `median([1, 2, 3])`,
		`reverse([1, 2])[0]`, `keys({"a": 1})`, `values(body)`, `toPairs({"a": 1})`, `fromPairs([["a", 1]])`, `sum(1..10)`,
		`body.a matches "^x$"`, `source matches ("^" + "s")`, `body.missing matches "a"`, `"ab" matches "b"`, `not ("ab" matches "^b")`,
		`all(["^a", "^x"], {not ("a" matches #)}) || any(["^b", "^a"], {"a" matches #})`,
		`let p = "^" + "a"; filter(["a", "b", "ab"], {# matches p})`} {
		base, e1 := expr.Compile(src, baseOptions()...)
		p, e2 := CompileValue(src)
		if (e1 == nil) != (e2 == nil) {
			t.Errorf("%s: compiles without the patches: %v; with them: %v", src, e1, e2)
			continue
		}
		if e1 != nil {
			continue
		}
		want, werr := vm.Run(base, env)
		got, gerr := p.Value(env)
		if (werr == nil) != (gerr == nil) || !equalValues(got, want) {
			t.Errorf("%s = %v, %v; without the patches %v, %v", src, got, gerr, want, werr)
		}
	}
}
