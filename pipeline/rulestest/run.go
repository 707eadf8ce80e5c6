package rulestest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/auth"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/ingest"
)

// Suite is a test file with the configuration it tests, compiled.
type Suite struct {
	file *File
	cfg  *config.Config
	ic   ingest.Config
}

// Load loads the configuration with load, with the file's env set, and
// serves its plan as the daemon does: the expressions compiled by load are
// the ones the cases run. Its error is a problem of the configuration.
func Load(f *File, load func() (*config.Config, error)) (*Suite, error) {
	s := &Suite{file: f}
	err := withEnv(f.loadEnv(), func() error {
		cfg, err := load()
		if err != nil {
			return err
		}
		s.cfg = cfg
		s.ic, err = ingest.FromConfig(cfg)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Result is what one case gave.
type Result struct {
	Name string
	// Diffs are the differences between what the case expects and what
	// happened, each a line (or a few, for a JSON diff); none when the case
	// passed.
	Diffs []string
}

// Passed reports whether the case met every expectation.
func (r *Result) Passed() bool { return len(r.Diffs) == 0 }

// outcome is what pipelined would do with a case's request.
type outcome struct {
	setup      error // the case cannot run: unknown source, bad env
	status     int
	reason     string // why a request is refused, or ignored
	logReason  string // what the log says instead of reason ("": reason); it names the rule
	ignored    bool   // the source's ignore rule acknowledged it (200, not stored)
	source     string
	window     time.Duration
	receivedAt time.Time
	dedupKey   string
	body       []byte
	routes     []string
	targets    []pipeline.Target
	ruleErrs   []error
}

// Run runs the cases whose name match accepts (nil: all), in file order.
// Every case is evaluated, so that expect_duplicate_of can name a case
// left out by match.
func (s *Suite) Run(match func(name string) bool) []Result {
	outs := make(map[string]*outcome, len(s.file.Cases))
	var results []Result
	for i := range s.file.Cases {
		c := &s.file.Cases[i]
		o := s.eval(i, c)
		outs[c.Name] = o
		if match != nil && !match(c.Name) {
			continue
		}
		results = append(results, Result{Name: c.Name, Diffs: compare(c, o, outs)})
	}
	return results
}

func (s *Suite) eval(i int, c *Case) *outcome {
	o := &outcome{body: c.body, receivedAt: DefaultReceivedAt}
	if c.ReceivedAt != nil {
		o.receivedAt = c.ReceivedAt.UTC()
	}
	si, err := s.sourceIndex(c.Source)
	if err != nil {
		o.setup = err
		return o
	}
	o.source, o.window = s.ic.Sources[si].Name, s.ic.Sources[si].DedupWindow

	h := http.Header{}
	for k, v := range c.Headers {
		h.Set(k, v)
	}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	src := s.ic.Sources[si] // a copy: the case's env may change its auth
	if len(c.Env) > 0 {
		env := map[string]string{}
		for k, v := range s.file.Env {
			env[k] = v
		}
		for k, v := range c.Env {
			env[k] = v
		}
		err := withEnv(env, func() error {
			spec, err := s.cfg.AuthSpec(si)
			if err == nil {
				src.Verifier, err = auth.New(spec)
			}
			return err
		})
		if err != nil {
			o.setup = fmt.Errorf("source %q: auth with the case's env: %w", src.Name, err)
			return o
		}
	}
	d := s.ic.Decide(&src, ingest.Request{
		Header:        h,
		Body:          bytes.NewReader(c.body),
		ContentLength: int64(len(c.body)),
		Query:         c.Query,
		ReceivedAt:    o.receivedAt,
		ID:            "test-" + strconv.Itoa(i+1),
	})
	o.status, o.reason, o.ignored = d.Status, d.Error, d.Ignored
	o.logReason = d.LogReason
	if !d.Accepted() {
		return o
	}
	o.dedupKey = d.Entry.DedupKey
	if d.DedupKeyErr != nil {
		o.ruleErrs = append(o.ruleErrs, fmt.Errorf("source %s dedup_key: %w", src.Name, d.DedupKeyErr))
	}
	o.targets = d.Entry.Targets
	o.ruleErrs = append(o.ruleErrs, d.RouteErrs...)
	if s.ic.Router != nil {
		o.routes = s.ic.Router.Matched(d.Env)
	}
	return o
}

func (s *Suite) sourceIndex(name string) (int, error) {
	var names []string
	for i, src := range s.ic.Sources {
		if src.Name == name {
			return i, nil
		}
		names = append(names, strconv.Quote(src.Name))
	}
	switch {
	case name == "" && len(s.ic.Sources) == 1:
		return 0, nil
	case name == "":
		return 0, fmt.Errorf("source: missing; the configuration has %d sources (%s): name one", len(names), strings.Join(names, ", "))
	}
	return 0, fmt.Errorf("source %q: no such [[source]] (defined: %s)", name, strings.Join(names, ", "))
}

// shown is the reason a rule's author reads: the log's, which names the
// rule, rather than the sender's.
func (o *outcome) shown() string {
	if o.logReason != "" {
		return o.logReason
	}
	return o.reason
}

// compare returns the differences between what c expects and o, one line
// each. outs holds the outcomes of the cases before c.
func compare(c *Case, o *outcome, outs map[string]*outcome) []string {
	if o.setup != nil {
		return []string{"cannot run: " + o.setup.Error()}
	}
	var d []string
	if o.status != c.ExpectStatus {
		got := strconv.Itoa(o.status)
		if r := o.shown(); r != "" {
			got += " (" + r + ")"
		}
		return append(d, fmt.Sprintf("status: want %d, got %s", c.ExpectStatus, got))
	}
	if o.status != http.StatusOK {
		return nil
	}
	if o.ignored {
		if (c.ExpectRoutes != nil && len(*c.ExpectRoutes) > 0) || (c.ExpectSinks != nil && len(*c.ExpectSinks) > 0) ||
			c.ExpectTransform != nil || c.ExpectDedupKey != nil || c.ExpectDuplicateOf != "" {
			d = append(d, "ignored, so not stored nor routed: "+o.shown())
		}
		return d
	}
	for _, err := range o.ruleErrs {
		d = append(d, "rule error: "+err.Error())
	}
	if c.ExpectDedupKey != nil && *c.ExpectDedupKey != o.dedupKey {
		d = append(d, fmt.Sprintf("dedup key: want %q, got %q", *c.ExpectDedupKey, o.dedupKey))
	}
	if c.ExpectDuplicateOf != "" {
		if why := notDuplicate(o, outs[c.ExpectDuplicateOf]); why != "" {
			d = append(d, fmt.Sprintf("duplicate_of: want %q, got not a duplicate: %s", c.ExpectDuplicateOf, why))
		}
		return d
	}
	if c.ExpectRoutes != nil {
		d = append(d, setDiff("routes", *c.ExpectRoutes, o.routes)...)
	}
	var sinks []string
	for _, t := range o.targets {
		sinks = append(sinks, t.Sink)
	}
	if c.ExpectSinks != nil {
		d = append(d, setDiff("sinks", *c.ExpectSinks, sinks)...)
	}
	names := make([]string, 0, len(c.ExpectTransform))
	for n := range c.ExpectTransform {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, sink := range names {
		d = append(d, transformDiff(sink, c.ExpectTransform[sink], o, sinks)...)
	}
	return d
}

// notDuplicate says why o is not a duplicate of first, "" when it is.
func notDuplicate(o, first *outcome) string {
	switch {
	case first == nil:
		return "no such earlier case"
	case first.setup != nil || first.status != http.StatusOK:
		return "that case was not accepted"
	case o.source != first.source:
		return fmt.Sprintf("source %q, that case's is %q", o.source, first.source)
	case o.dedupKey == "":
		return "this event has no dedup key"
	case o.dedupKey != first.dedupKey:
		return fmt.Sprintf("dedup key %q, that case's is %q", o.dedupKey, first.dedupKey)
	}
	if gap := o.receivedAt.Sub(first.receivedAt).Abs(); gap >= o.window {
		return fmt.Sprintf("received %v apart, outside the dedup window of %v", gap, o.window)
	}
	return ""
}

// setDiff compares two sets of names.
func setDiff(what string, want, got []string) []string {
	w, g := sorted(want), sorted(got)
	if slices.Equal(w, g) {
		return nil
	}
	var missing, extra []string
	for _, n := range w {
		if !slices.Contains(g, n) {
			missing = append(missing, n)
		}
	}
	for _, n := range g {
		if !slices.Contains(w, n) {
			extra = append(extra, n)
		}
	}
	line := fmt.Sprintf("%s: want %s, got %s", what, list(w), list(g))
	if len(missing) > 0 {
		line += "; missing " + strings.Join(missing, ", ")
	}
	if len(extra) > 0 {
		line += "; unexpected " + strings.Join(extra, ", ")
	}
	return []string{line}
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return "[" + strings.Join(s, " ") + "]"
}

// transformDiff compares the payload sink receives with want.
func transformDiff(sink string, want any, o *outcome, sinks []string) []string {
	what := "transform for sink " + sink
	wantJSON, err := normalize(want)
	if err != nil {
		return []string{fmt.Sprintf("%s: expect_transform.%s: %v", what, sink, err)}
	}
	i := slices.IndexFunc(o.targets, func(t pipeline.Target) bool { return t.Sink == sink })
	if i < 0 {
		return []string{fmt.Sprintf("%s: the sink gets no event (sinks: %s)", what, list(sorted(sinks)))}
	}
	t := o.targets[i]
	if t.Err != "" {
		return []string{fmt.Sprintf("%s: got error: %s", what, t.Err)}
	}
	payload := t.Payload
	if payload == nil {
		payload = o.body // no transform: the sink gets the body as sent
	}
	var got any
	if err := json.Unmarshal(payload, &got); err != nil {
		return []string{fmt.Sprintf("%s: payload is not JSON: %v", what, err)}
	}
	if reflect.DeepEqual(wantJSON, got) {
		return nil
	}
	return []string{fmt.Sprintf("%s (route %s) (-want +got):\n%s", what, t.Route, lineDiff(indent(wantJSON), indent(got)))}
}

// normalize turns an expected payload into what decoding JSON gives: a
// string is JSON text; any other TOML value is encoded and decoded again.
func normalize(v any) (any, error) {
	b, ok := v.(string)
	var raw []byte
	if ok {
		raw = []byte(b)
	} else {
		var err error
		if raw, err = json.Marshal(v); err != nil {
			return nil, err
		}
	}
	var out any
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("not JSON text: %v", err)
	}
	return out, nil
}

func indent(v any) []string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return strings.Split(string(b), "\n")
}

// lineDiff returns want and got line by line, "-" before a line only in
// want, "+" before one only in got, two spaces before a common line.
func lineDiff(want, got []string) string {
	n, m := len(want), len(got)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if want[i] == got[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var b strings.Builder
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && want[i] == got[j]:
			b.WriteString("  " + want[i] + "\n")
			i, j = i+1, j+1
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			b.WriteString("- " + want[i] + "\n")
			i++
		default:
			b.WriteString("+ " + got[j] + "\n")
			j++
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}
