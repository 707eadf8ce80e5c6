// Package alerts_test checks alerts.yml, the Prometheus alerting rules
// that examples/prometheus ships, against what pipelined exports. It is a
// module of its own so that Prometheus's rule parser stays out of the
// daemon's dependencies.
package alerts_test

import (
	"context"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/pipelined/pipelined/pipeline/metrics"
)

// series are the label sets of a metric family, by family name.
type series map[string][]map[string]string

// exported gathers what a daemon with one source ("s", with an accept
// rule), one route ("r") and one sink ("k") exports: at its start
// (InitSource, InitRuleError and InitSink are what ingest and the daemon
// call), and (all) once every lazily made series has appeared.
func exported(t *testing.T) (start, all series) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	metrics.RegisterBuildInfo(reg, "v", "c", "go")
	metrics.RegisterProcess(reg)
	m.InitSource("s")
	m.InitRuleError("r", "when")
	m.InitRuleError("s", "accept")
	m.InitSink("k")
	m.SetQueueSource(func(context.Context) ([]metrics.QueueSample, error) {
		return []metrics.QueueSample{{Sink: "k"}}, nil
	})
	m.SetLogSize(func() map[string]int64 { return map[string]int64{"wal": 1} })
	m.SinkUp("k", true)
	start = gather(t, reg)

	m.IngestRequest("", metrics.OutcomeNotFound, 0)
	m.IngestRequest("s", metrics.OutcomeAccepted, time.Millisecond)
	m.RouteMatched("r")
	m.RuleError("r", "when")
	m.DedupKeyError("s")
	m.WriterCommit(1, time.Millisecond, nil)
	m.Delivery("k", 1, 1, 1, 1, time.Millisecond, nil)
	m.PluginRestart("k")
	m.Reload(nil)
	m.RejectionDropped("s")
	m.RejectionsEvicted("s", 1)
	m.OrderKeyError("k")
	return start, gather(t, reg)
}

func gather(t *testing.T, reg *prometheus.Registry) series {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := series{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			ls := map[string]string{}
			for _, lp := range m.GetLabel() {
				ls[lp.GetName()] = lp.GetValue()
			}
			if mf.GetType() == dto.MetricType_HISTOGRAM {
				out[mf.GetName()+"_count"] = append(out[mf.GetName()+"_count"], ls)
				out[mf.GetName()+"_sum"] = append(out[mf.GetName()+"_sum"], ls)
				ls = maps.Clone(ls)
				ls["le"] = "" // every bucket has it
				out[mf.GetName()+"_bucket"] = append(out[mf.GetName()+"_bucket"], ls)
				continue
			}
			out[mf.GetName()] = append(out[mf.GetName()], ls)
		}
	}
	return out
}

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"job", "instance"}

// TestAlertRules loads alerts.yml as Prometheus does (the YAML, each
// expression through the PromQL parser, each template), then checks that
// it names only what pipelined exports, and that what an increase() or
// rate() reads exists from the start.
func TestAlertRules(t *testing.T) {
	p := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.ParseFile("alerts.yml", false, model.UTF8Validation, p, nil)
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	start, all := exported(t)
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			n++
			name := r.Alert
			if sev := r.Labels["severity"]; sev != "page" && sev != "ticket" {
				t.Errorf("%s: severity %q, want page or ticket", name, sev)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", name, a)
				}
			}
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				t.Fatalf("%s: %v", name, err) // rulefmt parsed it already
			}
			checkExpr(t, name, r.Annotations, expr, start, all)
		}
	}
	if n < 10 {
		t.Errorf("alerts.yml has %d rules; did the file lose its groups?", n)
	}
}

// checkExpr checks the selectors, groupings and matchings of one rule's
// expression, and the labels its annotations read.
func checkExpr(t *testing.T, alert string, annotations map[string]string, expr parser.Expr, start, all series) {
	t.Helper()
	// known reports whether label l is one that e's result can have.
	known := func(e parser.Expr, l string) bool {
		return slices.Contains(targetLabels, l) || slices.Contains(outputLabels(e, all), l)
	}
	parser.Inspect(expr, func(node parser.Node, path []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			if n.Name == "up" {
				return nil
			}
			fam, ok := all[n.Name]
			if !ok {
				t.Errorf("%s: pipelined exports no %s", alert, n.Name)
				return nil
			}
			for _, m := range n.LabelMatchers {
				if m.Name != labels.MetricName && !slices.Contains(targetLabels, m.Name) {
					checkMatcher(t, alert, n.Name, m, fam)
				}
			}
			if !counterRead(path) {
				return nil
			}
			for _, want := range selections(n) {
				if !selects(want, start[n.Name]) {
					t.Errorf("%s: %s reads %s, which a daemon does not export at its start: its first rise would be missed (create it at zero)",
						alert, counterFunc(path), want)
				}
			}
		case *parser.AggregateExpr:
			for _, l := range n.Grouping {
				if !known(n.Expr, l) {
					t.Errorf("%s: groups by %q, which %s does not have", alert, l, n.Expr)
				}
			}
		case *parser.BinaryExpr:
			if n.VectorMatching == nil || !n.VectorMatching.On {
				return nil // ignoring(…) may name a label that one side lacks
			}
			for _, l := range n.VectorMatching.MatchingLabels {
				for _, side := range []parser.Expr{n.LHS, n.RHS} {
					if !known(side, l) {
						t.Errorf("%s: matches on %q, which %s does not have", alert, l, side)
					}
				}
			}
		}
		return nil
	})
	for name, text := range annotations {
		for _, m := range labelRef.FindAllStringSubmatch(text, -1) {
			if !known(expr, m[1]) {
				t.Errorf("%s: annotation %s uses $labels.%s, which its expression's result does not have (it has %v)", alert, name, m[1], outputLabels(expr, all))
			}
		}
	}
}

// labelRef finds the labels a template reads.
var labelRef = regexp.MustCompile(`\$labels\.([A-Za-z_][A-Za-z0-9_]*)`)

// outputLabels is what labels the result of e can have (besides the
// target's): an aggregation's grouping, a binary operation's left side
// (as "and", "unless" and comparisons keep it), a function's argument
// (histogram_quantile drops le), a selector's family.
func outputLabels(e parser.Expr, all series) []string {
	switch e := e.(type) {
	case *parser.ParenExpr:
		return outputLabels(e.Expr, all)
	case *parser.AggregateExpr:
		if e.Without {
			return slices.DeleteFunc(outputLabels(e.Expr, all), func(l string) bool { return slices.Contains(e.Grouping, l) })
		}
		return e.Grouping
	case *parser.BinaryExpr:
		if _, ok := e.LHS.(*parser.NumberLiteral); ok {
			return outputLabels(e.RHS, all)
		}
		return outputLabels(e.LHS, all)
	case *parser.Call:
		for _, a := range e.Args {
			if _, ok := a.(*parser.NumberLiteral); !ok {
				ls := outputLabels(a, all)
				if e.Func.Name == "histogram_quantile" {
					ls = slices.DeleteFunc(ls, func(l string) bool { return l == "le" })
				}
				return ls
			}
		}
	case *parser.MatrixSelector:
		return outputLabels(e.VectorSelector, all)
	case *parser.SubqueryExpr:
		return outputLabels(e.Expr, all)
	case *parser.VectorSelector:
		var out []string
		for _, ls := range all[e.Name] {
			for l := range ls {
				if !slices.Contains(out, l) {
					out = append(out, l)
				}
			}
		}
		return out
	}
	return nil
}

// checkMatcher checks that the family has the matcher's label, and that
// an equality or an alternation of plain words names values it has.
func checkMatcher(t *testing.T, alert, metric string, m *labels.Matcher, fam []map[string]string) {
	t.Helper()
	if !hasLabel(fam, m.Name) {
		t.Errorf("%s: %s has no label %q", alert, metric, m.Name)
		return
	}
	for _, v := range values(m) {
		if !slices.ContainsFunc(fam, func(ls map[string]string) bool { return ls[m.Name] == v }) {
			t.Errorf("%s: %s{%s} has no series with %s=%q", alert, metric, m.Name, m.Name, v)
		}
	}
}

// values are the label values a matcher names: the value of = and !=, the
// alternatives of a =~ or !~ that is a list of plain words; not "" (no such
// label) nor a real pattern.
func values(m *labels.Matcher) []string {
	var vs []string
	switch m.Type {
	case labels.MatchEqual, labels.MatchNotEqual:
		vs = []string{m.Value}
	case labels.MatchRegexp, labels.MatchNotRegexp:
		vs = strings.Split(m.Value, "|")
	}
	return slices.DeleteFunc(vs, func(v string) bool { return v == "" || strings.ContainsAny(v, `.*+?()[]{}\^$`) })
}

// selections splits a selector into what it selects: one per alternative
// of a =~ list of words, so that each must be there, the selector itself
// otherwise.
func selections(vs *parser.VectorSelector) []*parser.VectorSelector {
	for i, m := range vs.LabelMatchers {
		if m.Type != labels.MatchRegexp || len(values(m)) < 2 {
			continue
		}
		var out []*parser.VectorSelector
		for _, v := range values(m) {
			one := *vs
			one.LabelMatchers = slices.Clone(vs.LabelMatchers)
			one.LabelMatchers[i] = labels.MustNewMatcher(labels.MatchEqual, m.Name, v)
			out = append(out, selections(&one)...)
		}
		return out
	}
	return []*parser.VectorSelector{vs}
}

func hasLabel(fam []map[string]string, name string) bool {
	return slices.ContainsFunc(fam, func(ls map[string]string) bool { _, ok := ls[name]; return ok })
}

// selects reports whether vs matches one of the series.
func selects(vs *parser.VectorSelector, fam []map[string]string) bool {
	return slices.ContainsFunc(fam, func(ls map[string]string) bool {
		for _, m := range vs.LabelMatchers {
			if m.Name != labels.MetricName && !slices.Contains(targetLabels, m.Name) && !m.Matches(ls[m.Name]) {
				return false
			}
		}
		return true
	})
}

// counterFuncs are the functions whose result misses a series' first
// sample.
var counterFuncs = []string{"increase", "rate", "irate", "delta", "idelta"}

// counterRead reports whether the selector at the end of path is read by
// one of counterFuncs to count what happened; not a histogram's buckets
// read for a quantile, where a first sample missed changes nothing.
func counterRead(path []parser.Node) bool {
	for _, n := range path {
		if c, ok := n.(*parser.Call); ok && c.Func.Name == "histogram_quantile" {
			return false
		}
	}
	return counterFunc(path) != ""
}

func counterFunc(path []parser.Node) string {
	for _, n := range slices.Backward(path) {
		if c, ok := n.(*parser.Call); ok && slices.Contains(counterFuncs, c.Func.Name) {
			return c.Func.Name
		}
	}
	return ""
}
