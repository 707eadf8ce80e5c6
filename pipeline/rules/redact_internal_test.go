package rules

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/pipeline/internal/race"
)

// redactClosure is redact as it was before redactor: a closure that
// formats every number it meets. redact must give what it gives.
func redactClosure(msg string, env *Env) string {
	if strings.ContainsAny(msg, "\"`") {
		msg = quoted.ReplaceAllString(msg, `"…"`)
	}
	if env == nil {
		return msg
	}
	leaves := 0
	var walk func(v any)
	walk = func(v any) {
		if leaves > 100000 {
			return
		}
		leaves++
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case float64:
			s = strconv.FormatFloat(x, 'f', -1, 64)
			if len(s) < 4 {
				s = ""
			}
			if g := fmt.Sprint(x); g != s && len(g) >= 4 && strings.Contains(msg, g) {
				msg = strings.ReplaceAll(msg, g, "…")
			}
		case map[string]any:
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
		if len(s) >= 3 && strings.Contains(msg, s) {
			msg = strings.ReplaceAll(msg, s, "…")
		}
	}
	walk(env.Body)
	for _, h := range env.Headers {
		walk(h)
	}
	return msg
}

// redactEnv is an event whose values are walked in a fixed order (an
// array, maps of one key, one header), so that both redactions replace in
// the same order.
func redactEnv(s, h string, f float64) *Env {
	return &Env{
		Body:    []any{s, f, map[string]any{"k": []any{h + s, -f, f * 1e-9, f * 1e25}}, nil, true},
		Headers: map[string]string{"x-h": h},
	}
}

func TestRedactSame(t *testing.T) {
	for _, tc := range []struct {
		msg, s, h string
		f         float64
	}{
		{"invalid argument for len (type float64)", "interested", "application/json", 120},
		{"invalid argument for len (type float64)", "float64", "len", 25},
		{`cannot parse "2025-12-19" as "2006"`, "2025-12-19", "x", 2025},
		{"value 1234.5 and 1.2345e+28 and 1.2345e-06 too big", "abc", "de", 1234.5},
		{"value 1e+21 or 100000000000000000000 seen", "", "", 1e20},
		{"x 123456789 y 1.23456789e+08", "ab", "cd", 123456789},
		{"NaN +Inf -Inf 0.000001 1e-07", "NaN", "Inf", math.Inf(1)},
		{"tiny 5e-324 huge 1.7976931348623157e+308", "t", "h", 5e-324},
		{"no match at all", "zzz", "yyy", -0.5},
	} {
		env := redactEnv(tc.s, tc.h, tc.f)
		if got, want := redact(tc.msg, env), redactClosure(tc.msg, env); got != want {
			t.Errorf("redact(%q) = %q, the closure's %q", tc.msg, got, want)
		}
	}
	if got, want := redact(`a "q" b`, nil), redactClosure(`a "q" b`, nil); got != want {
		t.Errorf("redact(nil env) = %q, want %q", got, want)
	}
}

// FuzzRedact holds redact to the closure it replaced on any message and
// values.
func FuzzRedact(f *testing.F) {
	f.Add("invalid argument for len (type float64)", "float64", "len", 120.0)
	f.Add(`cannot parse "2025" as "2006"`, "2025", "x", 2025.5)
	f.Add("1.2345e+28 1234.5", "", "", 1234.5)
	f.Fuzz(func(t *testing.T, msg, s, h string, v float64) {
		env := redactEnv(s, h, v)
		if got, want := redact(msg, env), redactClosure(msg, env); got != want {
			t.Fatalf("redact(%q) = %q, the closure's %q", msg, got, want)
		}
	})
}

// TestRuleErrorOnce: a when that fails the same way on every event makes
// its error once (the same error, the same RouteError), while an event
// whose values the message holds still gets its own, redacted, and the
// next plain event the plain one again.
func TestRuleErrorOnce(t *testing.T) {
	r, err := NewRouter([]Route{{Name: "broken", When: "len(body.n) > 0", To: []string{"s"}}})
	if err != nil {
		t.Fatal(err)
	}
	plain := &Env{Body: map[string]any{"n": 120.0}}
	quoting := &Env{Body: map[string]any{"n": 120.0, "t": "float64"}}
	route := func(env *Env) *RouteError {
		t.Helper()
		_, errs := r.Route(env)
		if len(errs) != 1 {
			t.Fatalf("Route() errs = %v, want one", errs)
		}
		return errs[0].(*RouteError)
	}
	const want = "route broken when: invalid argument for len (type float64) (1:1)"
	first := route(plain)
	if first.Error() != want {
		t.Fatalf("error = %q, want %q", first.Error(), want)
	}
	if again := route(plain); again != first {
		t.Errorf("the same failure made a new RouteError: %p, %p", again, first)
	}
	if got, want := route(quoting).Error(), "route broken when: invalid argument for len (type …) (1:1)"; got != want {
		t.Errorf("error over an event holding \"float64\" = %q, want %q", got, want)
	}
	if got := route(plain).Error(); got != want {
		t.Errorf("error after it = %q, want %q", got, want)
	}
	if race.Enabled {
		return // the race detector allocates
	}
	// What is left per failing event is expr's own (its panic, recover
	// and error) and the errs slice.
	allocs := testing.AllocsPerRun(100, func() { r.Route(plain) })
	base := testing.AllocsPerRun(100, func() {
		p := r.whens[0]
		run := getRunner(t.Context(), plain)
		run.vm.Run(p.prog, &run.ev.env)
		run.release()
	})
	if allocs > base+1 {
		t.Errorf("a failing when costs %v allocations, expr's run alone %v: want at most one more (the errs slice)", allocs, base)
	}
}
