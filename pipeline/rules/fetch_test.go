package rules

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
)

// fetchEnvs are the CallKaro event and variants of it: missing and null
// fields, other JSON types where objects are expected.
func fetchEnvs(t testing.TB) map[string]*Env {
	t.Helper()
	base := callEnded(t)
	variant := func(body string) *Env {
		var b any
		if err := json.Unmarshal([]byte(body), &b); err != nil {
			t.Fatal(err)
		}
		e := *base
		e.Body = b
		return &e
	}
	return map[string]*Env{
		"call-ended":     base,
		"no-post-call":   variant(`{"event":"call_ended","data":{"call_duration":5,"functions_called":[]}}`),
		"null-data":      variant(`{"event":"call_ended","data":null,"amount":150}`),
		"null-post-call": variant(`{"event":"x","data":{"post_call":null,"try_count":null,"functions_called":null}}`),
		"data-array":     variant(`{"event":"x","data":[1,2,{"a":"b"}]}`),
		"data-string":    variant(`{"data":"just text","amount":"100"}`),
		"data-number":    variant(`{"data":3.5,"amount":99}`),
		"funcs-object":   variant(`{"data":{"functions_called":{"name":"update_crm"},"post_call":{"lead_status":7}}}`),
		"body-array":     variant(`[{"event":"call_ended"}]`),
		"body-string":    variant(`"call_ended"`),
		"body-null":      variant(`null`),
		"body-empty":     variant(`{}`),
	}
}

var fetchExprs = []string{
	`body`,
	`body.event`,
	`body.event == "call_ended"`,
	`body["event"] == "call_ended"`,
	`body.data.post_call.lead_status == "interested"`,
	`body.data["post_call"]["lead_status"]`,
	`body.data.post_call_detail.lead_status.value`,
	`body.data.call_duration > 100`,
	`body.data.call_duration == 120`,
	`body.amount > 100`,
	`body.nope`,
	`body.nope.deeper`,
	`body.nope.deeper + 1`,
	`body?.data?.post_call?.lead_status`,
	`body?.data.post_call.lead_status`,
	`body.data?.post_call.lead_status ?? "none"`,
	`body.data.post_call?.lead_status`,
	`(body.amount ?? 0) > 100`,
	`(body.data.try_count ?? 0) < 3 && headers["webhook-id"] != ""`,
	`body.data.nope ?? body.event`,
	`"post_call" in body.data`,
	`"x" in body.data.functions_called`,
	`len(body.data.functions_called)`,
	`len(body.data.post_call.lead_status)`,
	`body.data.functions_called[0].name`,
	`body.data.functions_called[-1]["success"]`,
	`body.data.functions_called[5].name`,
	`any(body.data.functions_called, .name == "update_crm")`,
	`map(body.data.functions_called, .name)`,
	`filter(body.data.functions_called, #.success) | map(#.timestamp)`,
	`map(body.data.functions_called, {"n": .name, "ok": .success})`,
	`{"text": "Interested lead from " + body.data.from, "secs": body.data.call_duration}`,
	`body.data.call_metadata.age * 2`,
	`body.data.call_metadata.name startsWith "J"`,
	`body.data.call_metadata.age > "x"`,
	`body.data.callSid + ":" + source`,
	`body.data.conversion_status && !body.data.next_call_scheduled`,
	`body.event.length`,
	`body.data.from.x`,
	`body[0].event`,
	`let d = body.data; d.post_call.lead_status + d.callSid`,
	`$env.body.data.callSid`,
	`$env?.body?.data?.nope?.x`,
	`received_at.Year() + len(headers) + len(id)`,
	`body.data.call_duration / 100`,
	`body.data.post_call.lead_status matches "^inter"`,
	`body.data.Len()`,
	`body.event ?? "none"`,
	`body.data.nope?.deeper ?? 1`,
	// The budget's operators and builtins take $env as expr's own do,
	// dereferenced (FuzzFetchPatch found "*rules.Env + <nil>").
	`$env + body.nope`,
	`"x" + $env`,
	`$env in body.data`,
	`$env matches "x"`,
	`repeat($env, 2)`,
	`keys($env)`,
	`concat($env)`,
	`string($env)`,
}

var address = regexp.MustCompile(`0x[0-9a-f]{6,}`)

// TestFetchPatchIsEquivalent compiles each expression with and without the
// fetch shortcut and runs both over each env: results, and errors to the
// letter, must agree.
func TestFetchPatchIsEquivalent(t *testing.T) {
	envs := fetchEnvs(t)
	var runs, runErrs, compileErrs int
	defer func() { t.Logf("%d runs, %d runtime errors, %d compile errors", runs, runErrs, compileErrs) }()
	for _, src := range fetchExprs {
		for _, asBool := range []bool{false, true} {
			opts := baseOptions()
			patched, perr := CompileValue(src)
			if asBool {
				opts = append(opts, expr.AsBool())
				patched, perr = CompileBool(src)
			}
			plain, err := compile(src, opts)
			if asBool && err == nil {
				if e := notACondition(src); e != nil { // CompileBool's own check, after either compile
					plain, err = nil, e
				}
			}
			if fmt.Sprint(perr) != fmt.Sprint(err) {
				t.Errorf("compile %q (bool %v): patched error %v, plain %v", src, asBool, perr, err)
				continue
			}
			if err != nil {
				compileErrs++
				continue
			}
			for name, env := range envs {
				pv, perr := patched.Value(env)
				v, err := plain.Value(env)
				runs++
				if err != nil {
					runErrs++
				}
				if fmt.Sprint(perr) != fmt.Sprint(err) || !equalValues(pv, v) {
					t.Errorf("%q over %s: patched %#v, %v; plain %#v, %v", src, name, pv, perr, v, err)
				}
			}
		}
	}
}

// TestFetchPatchApplies checks that the patcher does replace member access
// on body, and only there.
func TestFetchPatchApplies(t *testing.T) {
	tests := []struct {
		src   string
		calls int
	}{
		{`body.data.post_call.lead_status`, 4 - 1},
		{`body["data"]`, 1},
		{`body?.data`, 0},
		{`body?.data.x`, 1},
		{`body.data[0]`, 1},
		{`headers["x"]`, 0},
		{`received_at.Year()`, 0},
		{`map(body.data.functions_called, .name)`, 3},
	}
	for _, tt := range tests {
		p, err := CompileValue(tt.src)
		if err != nil {
			t.Fatal(err)
		}
		if got := countFetch(p.prog); got != tt.calls {
			t.Errorf("%q: %d fast fetches, want %d\n%s", tt.src, got, tt.calls, p.prog.Disassemble())
		}
	}
}

func countFetch(p *vm.Program) int {
	n := 0
	for _, line := range strings.Split(p.Disassemble(), "\n") {
		if strings.Contains(line, "OpCallTyped") && strings.HasSuffix(line, "func(interface {}, interface {}) interface {}") {
			n++
		}
	}
	return n
}

// FuzzFetchPatch compares programs compiled with and without the fetch
// shortcut, as TestFetchPatchIsEquivalent does, on arbitrary expressions.
func FuzzFetchPatch(f *testing.F) {
	for _, src := range fetchExprs {
		f.Add(src)
	}
	envs := fetchEnvs(f)
	f.Fuzz(func(t *testing.T, src string) {
		patched, perr := CompileValue(src)
		plain, err := compile(src, baseOptions())
		if fmt.Sprint(perr) != fmt.Sprint(err) {
			t.Fatalf("compile %q: patched error %v, plain %v", src, perr, err)
		}
		if err != nil {
			return
		}
		for name, env := range envs {
			pv, perr := patched.Value(env)
			v, err := plain.Value(env)
			if fmt.Sprint(perr) != fmt.Sprint(err) || !equalValues(pv, v) {
				t.Fatalf("%q over %s: patched %#v, %v; plain %#v, %v", src, name, pv, perr, v, err)
			}
		}
	})
}

// equalValues is reflect.DeepEqual, except that NaN equals NaN, functions
// (which expr can return, e.g. for received_at.Year) are equal when both
// are functions, and strings are equal but for the heap addresses they
// print: string($env) prints the pointer to the evaluation's budget, which
// differs between any two evaluations, patched or not.
func equalValues(a, b any) bool {
	if fmt.Sprint(a) == "NaN" && fmt.Sprint(b) == "NaN" {
		return true
	}
	if sa, ok := a.(string); ok {
		if sb, ok := b.(string); ok {
			return address.ReplaceAllString(sa, "0x…") == address.ReplaceAllString(sb, "0x…")
		}
	}
	if a != nil && b != nil && reflect.TypeOf(a).Kind() == reflect.Func {
		return reflect.TypeOf(a) == reflect.TypeOf(b)
	}
	return reflect.DeepEqual(a, b)
}
