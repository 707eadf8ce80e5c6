package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

func callEnded(tb testing.TB) *Env {
	tb.Helper()
	data, err := os.ReadFile("testdata/call_ended.json")
	if err != nil {
		tb.Fatal(err)
	}
	var body any
	if err := json.Unmarshal(data, &body); err != nil {
		tb.Fatal(err)
	}
	return &Env{
		Body:       body,
		Source:     "callkaro",
		Headers:    map[string]string{"content-type": "application/json", "webhook-id": "msg_1"},
		ID:         "01JEVENT",
		ReceivedAt: time.Date(2025, 12, 19, 16, 1, 8, 0, time.UTC),
	}
}

func TestBool(t *testing.T) {
	env := callEnded(t)
	tests := []struct {
		name, src string
		want      bool
		wantErr   string
	}{
		{"event", `body.event == "call_ended"`, true, ""},
		{"nested", `body.data.post_call.lead_status == "interested"`, true, ""},
		{"float-int", `body.data.call_duration == 120`, true, ""},
		{"greater", `body.data.call_duration > 100 && source == "callkaro"`, true, ""},
		{"header", `headers["webhook-id"] == "msg_1"`, true, ""},
		{"id", `id startsWith "01J"`, true, ""},
		{"received-at", `received_at.Year() == 2025`, true, ""},
		{"missing-is-false", `body.nope`, false, ""},
		{"no-match", `body.event == "call_started"`, false, ""},
		{"coalesce", `(body.amount ?? 0) > 100`, false, ""},
		{"array", `any(body.data.functions_called, .name == "update_crm")`, true, ""},
		{"missing-compare", `body.amount > 100`, false, "invalid operation"},
		{"string-not-bool", `body.event`, false, "bool"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := CompileBool(tt.src)
			if err != nil {
				t.Fatalf("CompileBool(%q) = %v", tt.src, err)
			}
			got, err := p.Bool(env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Bool(%q) = %v, %v, want error containing %q", tt.src, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Bool(%q) = %v, %v, want %v", tt.src, got, err, tt.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	env := callEnded(t)
	tests := []struct {
		name, src, want string
		wantErr         bool
	}{
		{"string", `body.data.callSid`, "2303fa770b666a64ab1694c1e", false},
		{"float-integral", `body.data.call_duration`, "(float)120", false},
		{"float-fraction", `body.data.call_duration / 100`, "(float)1.2", false},
		{"large-float", `1e21`, "(float)1000000000000000000000", false},
		{"int", `7`, "(int)7", false},
		{"bool", `body.data.conversion_status`, "(bool)true", false},
		{"nil", `body.data.nope`, "", false},
		{"string like a typed key", `"(int)1"`, "(string)(int)1", false},
		{"string like a hashed key", `"(sha256)ab"`, "(string)(sha256)ab", false},
		{"concat", `source + ":" + body.data.callSid`, "callkaro:2303fa770b666a64ab1694c1e", false},
		{"map", `body.data.call_metadata`, "", true},
		{"array", `body.data.functions_called`, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := CompileValue(tt.src)
			if err != nil {
				t.Fatalf("CompileValue(%q) = %v", tt.src, err)
			}
			got, err := p.String(env)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("String(%q) = %q, %v, want %q (error %v)", tt.src, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestValue(t *testing.T) {
	env := callEnded(t)
	p, err := CompileValue(`{"text": "Interested lead from " + body.data.from, "secs": body.data.call_duration}`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Value(env)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(got)
	want := `{"secs":120,"text":"Interested lead from 919876543210"}`
	if string(b) != want {
		t.Fatalf("Value = %s, want %s", b, want)
	}
	if p.Source() == "" {
		t.Fatal("Source() is empty")
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name, src string
		bool      bool
		want      SyntaxError
	}{
		{"unknown-name", `bdy.event == "x"`, true, SyntaxError{Line: 1, Column: 1, Msg: "unknown name bdy"}},
		{"unknown-name-later", `body.event == "x" && sorce == "y"`, true, SyntaxError{Line: 1, Column: 22, Msg: "unknown name sorce"}},
		{"second-line", "body.event == \"x\" &&\n  bdy.x", true, SyntaxError{Line: 2, Column: 3, Msg: "unknown name bdy"}},
		{"not-bool", `len(source)`, true, SyntaxError{Line: 1, Column: 1, Msg: "expected bool, but got int"}},
		{"arithmetic-on-a-field", `body.amount + 1`, true, SyntaxError{Line: 1, Column: 13, Msg: `expected bool, but "+" gives a number or a string`}},
		{"text-and-a-field", `"id-" + body.id`, true, SyntaxError{Line: 1, Column: 7, Msg: `expected bool, but "+" gives`}},
		{"negated-field", `-body.balance`, true, SyntaxError{Line: 1, Column: 1, Msg: `expected bool, but "-" gives`}},
		{"arithmetic-second-line", "body.a\n  * 2", true, SyntaxError{Line: 2, Column: 3, Msg: `expected bool, but "*" gives`}},
		{"arithmetic-after-let", `let a = body.amount; a + 1`, true, SyntaxError{Line: 1, Column: 24, Msg: `expected bool, but "+" gives`}},
		{"arithmetic-in-a-branch", `body.ok ? body.n + 1 : false`, true, SyntaxError{Line: 1, Column: 18, Msg: `expected bool, but "+" gives`}},
		{"arithmetic-in-an-else", `if body.ok { true } else { -body.n }`, true, SyntaxError{Line: 1, Column: 28, Msg: `expected bool, but "-" gives`}},
		{"coalesce-to-a-number", `body.ok ?? 0`, true, SyntaxError{Line: 1, Column: 12, Msg: `expected bool, but the fallback after ?? is a number`}},
		{"coalesce-to-a-string", `body.ok ?? "no"`, true, SyntaxError{Line: 1, Column: 12, Msg: `expected bool, but the fallback after ?? is a string`}},
		{"coalesce-to-a-list", `body.ok ?? []`, true, SyntaxError{Line: 1, Column: 12, Msg: `expected bool, but the fallback after ?? is a list`}},
		{"coalesce-to-a-call", `body.ok ?? len(body.items)`, true, SyntaxError{Line: 1, Column: 12, Msg: `expected bool, but the fallback after ?? is a number`}},
		{"coalesce-to-a-header", `body.ok ?? headers["x-ok"]`, true, SyntaxError{Line: 1, Column: 19, Msg: `expected bool, but the fallback after ?? is a string`}},
		{"coalesce-chain", `body.ok ?? body.yes ?? 1`, true, SyntaxError{Line: 1, Column: 24, Msg: `expected bool, but the fallback after ?? is a number`}},
		{"coalesce-to-arithmetic", `body.ok ?? (body.n + 1)`, true, SyntaxError{Line: 1, Column: 20, Msg: `expected bool, but "+" gives a number or a string`}},
		{"coalesce-to-a-negation", `body.ok ?? -body.n`, true, SyntaxError{Line: 1, Column: 12, Msg: `expected bool, but "-" gives a number`}},
		{"coalesce-of-arithmetic", `(body.n * 2) ?? false`, true, SyntaxError{Line: 1, Column: 9, Msg: `expected bool, but "*" gives a number or a string`}},
		{"coalesce-of-a-string", `source ?? false`, true, SyntaxError{Line: 1, Column: 1, Msg: `expected bool, but the value before ?? is a string`}},
		{"coalesce-optional-chain", `body?.a?.ok ?? 0`, true, SyntaxError{Line: 1, Column: 16, Msg: `expected bool, but the fallback after ?? is a number`}},
		{"coalesce-in-a-branch", `body.a ? body.ok ?? 0 : false`, true, SyntaxError{Line: 1, Column: 21, Msg: `expected bool, but the fallback after ?? is a number`}},
		{"branch-a-string", `body.ok ? true : "no"`, true, SyntaxError{Line: 1, Column: 18, Msg: `expected bool, but a branch is a string`}},
		{"if-a-number", `if body.ok { 1 } else { body.yes }`, true, SyntaxError{Line: 1, Column: 14, Msg: `expected bool, but a branch is a number`}},
		{"slice-of-a-field", `body.name[0:3]`, true, SyntaxError{Line: 1, Column: 10, Msg: `expected bool, but the slice [:] gives a string or a list`}},
		{"syntax", `body.event ==`, false, SyntaxError{Line: 1, Column: 0, Msg: "unexpected token EOF"}},
		{"now-disabled", `now()`, false, SyntaxError{Line: 1, Column: 1, Msg: "unknown name now"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.bool {
				_, err = CompileBool(tt.src)
			} else {
				_, err = CompileValue(tt.src)
			}
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Compile(%q) = %v, want *SyntaxError", tt.src, err)
			}
			if se.Line != tt.want.Line || (tt.want.Column != 0 && se.Column != tt.want.Column) || !strings.HasPrefix(se.Msg, tt.want.Msg) {
				t.Fatalf("Compile(%q) = %+v, want %+v", tt.src, *se, tt.want)
			}
			if se.Column < 1 {
				t.Fatalf("Compile(%q) column = %d, want >= 1", tt.src, se.Column)
			}
			if want := fmt.Sprintf("(%d:%d)", se.Line, se.Column); !strings.HasSuffix(se.Error(), want) {
				t.Fatalf("Error() = %q, want suffix %q", se.Error(), want)
			}
		})
	}
}

// TestCompileBoolConditions: what may be true or false at run time
// compiles as a when, arithmetic below the last step included.
func TestCompileBoolConditions(t *testing.T) {
	for _, src := range []string{
		`body.ok`, `body.ok ?? false`, `not body.ok`, `!body.ok`, `body.amount * 2 > 100`,
		`body.amount + 1 == 2`, `(body.a - body.b) % 2 == 0`, `body.n in 1..3`, `body.a.b?.c`,
		`let a = body.n + 1; a > 2`, `body.ok ? body.n > 1 : false`, `if body.ok { body.a } else { false }`,
		`body.ok ?? nil`, `body.ok ?? body.yes ?? false`, `(body.n ?? 0) > 0`, `body?.a?.ok ?? false`, `body.ok ?? (body.n > 1)`,
		`(body.name ?? "")[0:3] == "abc"`, `body.ok ? true : nil`, `body.ok ?? (body.n + 1 > 2)`, `let d = body.ok; d ?? false`,
		`body.ok ?? ("x" in body.tags)`, `body.ok ?? all(body.items, {# > 0})`,
	} {
		if _, err := CompileBool(src); err != nil {
			t.Errorf("CompileBool(%q) = %v, want nil", src, err)
		}
	}
}

func TestRoute(t *testing.T) {
	env := callEnded(t)
	tests := []struct {
		name     string
		routes   []Route
		want     []pipeline.Target
		wantErrs []string
	}{
		{
			name: "fan-out",
			routes: []Route{
				{Name: "all", When: `body.event == "call_ended"`, To: []string{"archive"}},
				{Name: "leads", When: `body.data.post_call.lead_status == "interested"`, To: []string{"slack", "db"}},
				{Name: "none", When: `false`, To: []string{"other"}},
			},
			want: []pipeline.Target{
				{Sink: "archive", Route: "all"},
				{Sink: "slack", Route: "leads"},
				{Sink: "db", Route: "leads"},
			},
		},
		{
			name: "same-sink-first-route-wins",
			routes: []Route{
				{Name: "first", When: `true`, Transform: `{"n": 1}`, To: []string{"slack"}},
				{Name: "second", When: `true`, Transform: `{"n": 2}`, To: []string{"slack", "archive"}},
			},
			want: []pipeline.Target{
				{Sink: "slack", Route: "first", Payload: []byte(`{"n":1}`)},
				{Sink: "archive", Route: "second", Payload: []byte(`{"n":2}`)},
			},
		},
		{
			name: "when-runtime-error-is-no-match",
			routes: []Route{
				{Name: "money", When: `body.amount > 100`, To: []string{"billing"}},
				{Name: "all", When: `true`, To: []string{"archive"}},
			},
			want:     []pipeline.Target{{Sink: "archive", Route: "all"}},
			wantErrs: []string{"route money when: invalid operation"},
		},
		{
			name: "transform-error-sets-err",
			routes: []Route{
				{Name: "bad", When: `true`, Transform: `body.nope.deeper + 1`, To: []string{"slack"}},
				{Name: "all", When: `true`, To: []string{"archive"}},
			},
			want: []pipeline.Target{
				{Sink: "slack", Route: "bad", Err: "route bad transform: "},
				{Sink: "archive", Route: "all"},
			},
			wantErrs: []string{"route bad transform: "},
		},
		{
			name: "transform-unencodable",
			routes: []Route{
				{Name: "nan", When: `true`, Transform: `{"x": 0.0 / 0.0}`, To: []string{"slack"}},
			},
			want:     []pipeline.Target{{Sink: "slack", Route: "nan", Err: "route nan transform: json: unsupported value: NaN"}},
			wantErrs: []string{"route nan transform: json"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRouter(tt.routes)
			if err != nil {
				t.Fatalf("NewRouter = %v", err)
			}
			got, errs := r.Route(env)
			if len(got) != len(tt.want) {
				t.Fatalf("Route = %+v, want %+v", got, tt.want)
			}
			for i := range got {
				g, w := got[i], tt.want[i]
				if g.Sink != w.Sink || g.Route != w.Route || string(g.Payload) != string(w.Payload) ||
					!strings.HasPrefix(g.Err, w.Err) || (w.Err == "") != (g.Err == "") {
					t.Errorf("Route target %d = %+v (payload %s), want %+v (payload %s)", i, g, g.Payload, w, w.Payload)
				}
			}
			if len(errs) != len(tt.wantErrs) {
				t.Fatalf("Route errs = %v, want %v", errs, tt.wantErrs)
			}
			for i := range errs {
				if !strings.HasPrefix(errs[i].Error(), tt.wantErrs[i]) {
					t.Errorf("Route errs[%d] = %v, want prefix %q", i, errs[i], tt.wantErrs[i])
				}
			}
		})
	}
}

func TestNewRouterErrors(t *testing.T) {
	_, err := NewRouter([]Route{
		{Name: "a", When: `bdy.x`, To: []string{"s"}},
		{Name: "b", When: `true`, Transform: `{"x": sorce}`, To: []string{"s"}},
	})
	var se *SyntaxError
	if err == nil || !errors.As(err, &se) {
		t.Fatalf("NewRouter = %v, want *SyntaxError", err)
	}
	for _, want := range []string{`route "a": when: unknown name bdy (1:1)`, `route "b": transform: unknown name sorce (1:7)`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("NewRouter = %v, want %q", err, want)
		}
	}
}

func TestConcurrent(t *testing.T) {
	env := callEnded(t)
	r, err := NewRouter(benchRoutes(20))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := r.Route(env)
	done := make(chan struct{})
	for g := 0; g < 8; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; i < 200; i++ {
				got, errs := r.Route(env)
				if len(got) != len(want) || len(errs) != 0 {
					t.Errorf("Route = %d targets, %v; want %d", len(got), errs, len(want))
					return
				}
			}
		}()
	}
	for g := 0; g < 8; g++ {
		<-done
	}
}

// benchRoutes makes n realistic routes over the CallKaro payload: a mix of
// matches and misses, a few with transforms, fanning out to 10 sinks.
func benchRoutes(n int) []Route {
	rs := make([]Route, 0, n)
	for i := 0; i < n; i++ {
		r := Route{Name: fmt.Sprintf("r%d", i), To: []string{fmt.Sprintf("sink%d", i%10)}}
		switch i % 5 {
		case 0:
			r.When = `body.event == "call_ended"`
		case 1:
			r.When = fmt.Sprintf(`body.event == "call_ended" && body.data.call_duration > %d`, i)
		case 2:
			r.When = `body.data.post_call.lead_status == "interested" && source == "callkaro"`
			r.Transform = `{"text": "Interested lead from " + body.data.from}`
		case 3:
			r.When = fmt.Sprintf(`body.data.hangup_reason == "REASON_%d"`, i)
		case 4:
			r.When = `(body.data.try_count ?? 0) < 3 && headers["webhook-id"] != ""`
		}
		rs = append(rs, r)
	}
	return rs
}

func benchmarkRoute(b *testing.B, routes []Route) {
	env := callEnded(b)
	r, err := NewRouter(routes)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		_, errs := r.Route(env)
		if len(errs) > 0 {
			b.Fatal(errs)
		}
	}
}

func BenchmarkRoute100(b *testing.B) { benchmarkRoute(b, benchRoutes(100)) }

// BenchmarkRoute100Distinct is BenchmarkRoute100 with no two routes
// sharing a when, so that every one is evaluated.
func BenchmarkRoute100Distinct(b *testing.B) {
	rs := benchRoutes(100)
	for i := range rs {
		rs[i].When = fmt.Sprintf("(%s) && %d >= 0", rs[i].When, i)
	}
	benchmarkRoute(b, rs)
}
func BenchmarkRoute5(b *testing.B) { benchmarkRoute(b, benchRoutes(5)) }

func BenchmarkDedupKey(b *testing.B) {
	env := callEnded(b)
	p, err := CompileValue(`body.data.callSid`)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.String(env); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzCompile(f *testing.F) {
	f.Add(`body.event == "call_ended"`)
	f.Add(`{"text": body.data.from}`)
	f.Add(`1..100 | map(# * 2)`)
	f.Add(`let a = repeat("x", 1000); let b = a + a; join([b, a], "-") + toJSON(body)`)
	f.Add(`any(body.data.functions_called, {# in body.data.functions_called}) || "a" in split("a,b", ",")`)
	env := callEnded(f)
	f.Fuzz(func(t *testing.T, src string) {
		p, err := CompileValue(src)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Line < 1 || se.Column < 1 {
				t.Fatalf("CompileValue(%q) = %v, want *SyntaxError with position", src, err)
			}
			return
		}
		_, _ = p.Value(env)
	})
}

func TestTransformOutputIsBounded(t *testing.T) {
	r, err := NewRouter([]Route{{Name: "huge", When: "true", To: []string{"s"},
		Transform: `{"big": map(1..200000, "a fairly long string of text")}`}})
	if err != nil {
		t.Fatal(err)
	}
	targets, errs := r.Route(&Env{Body: map[string]any{}})
	if len(targets) != 1 || targets[0].Payload != nil || !strings.Contains(targets[0].Err, "larger than the limit") || len(errs) != 1 {
		t.Fatalf("Route with a 6 MB transform = %+v, %v; want one target with an error and no payload", targets, errs)
	}
}

// Routes that share a when have it evaluated once per event, and each
// still matches, or fails, under its own name.
func TestSharedWhen(t *testing.T) {
	env := callEnded(t)
	r, err := NewRouter([]Route{
		{Name: "a", When: `body.event == "call_ended"`, To: []string{"s1"}},
		{Name: "bad1", When: `body.data.from.nope > 1`, To: []string{"s2"}},
		{Name: "b", When: `body.event == "call_ended"`, To: []string{"s3"}},
		{Name: "bad2", When: `body.data.from.nope > 1`, To: []string{"s4"}},
		{Name: "c", When: `body.event == "other"`, To: []string{"s5"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.whens) != 3 {
		t.Errorf("%d distinct whens compiled, want 3", len(r.whens))
	}
	targets, errs := r.Route(env)
	var got []string
	for _, tg := range targets {
		got = append(got, tg.Route+">"+tg.Sink)
	}
	if want := []string{"a>s1", "b>s3"}; !slices.Equal(got, want) {
		t.Errorf("targets = %v, want %v", got, want)
	}
	var names []string
	for _, e := range errs {
		var re *RouteError
		if !errors.As(e, &re) {
			t.Fatalf("error %v is not a *RouteError", e)
		}
		names = append(names, re.Route)
	}
	if want := []string{"bad1", "bad2"}; !slices.Equal(names, want) {
		t.Errorf("errors name routes %v, want %v", names, want)
	}
}
