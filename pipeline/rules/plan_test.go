package rules_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/rules"
	"github.com/pipelined/pipelined/pipeline/rulestest"
)

// TestLoadCompilesEachExpressionOnce: loading a configuration compiles each
// of its expressions once, and what serves it (the daemon's ingest config,
// the rule tests of `pipelined test`) runs those very programs, compiling
// nothing again.
func TestLoadCompilesEachExpressionOnce(t *testing.T) {
	const file = "../../examples/callkaro/pipeline.toml"
	var compiled []string
	defer rules.SetCompileHook(func(src string) { compiled = append(compiled, src) })()

	cfg, err := config.Load(file)
	if err != nil {
		t.Fatalf("Load(%s) = %v", file, err)
	}
	var want []string
	for _, s := range cfg.Sources {
		for _, e := range []string{s.DedupKey, s.Ignore, s.Accept} {
			if strings.TrimSpace(e) != "" {
				want = append(want, e)
			}
		}
	}
	whens := map[string]bool{}
	for _, r := range cfg.Routes {
		if !whens[r.When] { // routes that share a when share its program
			whens[r.When] = true
			want = append(want, r.When)
		}
		if r.Transform != "" {
			want = append(want, r.Transform)
		}
	}
	if len(want) < 5 {
		t.Fatalf("%s has %d expressions; the test needs the example's dedup key, ignore rule, whens and transform", file, len(want))
	}
	slices.Sort(want)
	slices.Sort(compiled)
	if !slices.Equal(compiled, want) {
		t.Fatalf("Load(%s) compiled:\n%s\nwant each expression once:\n%s", file, strings.Join(compiled, "\n"), strings.Join(want, "\n"))
	}

	compiled = nil
	plan := cfg.Plan()
	ic, err := ingest.FromConfig(cfg)
	if err != nil {
		t.Fatalf("ingest.FromConfig = %v", err)
	}
	if ic.Router != plan.Router || ic.Sources[0].DedupKey != plan.Sources[0].DedupKey ||
		ic.Sources[0].Accept != plan.Sources[0].Accept || ic.Sources[0].Ignore != plan.Sources[0].Ignore || ic.Sources[0].Schema != plan.Sources[0].Schema {
		t.Error("ingest.FromConfig serves other programs than the plan's")
	}
	f, err := rulestest.Parse("../../examples/callkaro/pipeline_test.toml")
	if err != nil {
		t.Fatal(err)
	}
	suite, err := rulestest.Load(f, func() (*config.Config, error) { return cfg, nil })
	if err != nil {
		t.Fatalf("rulestest.Load = %v", err)
	}
	results := suite.Run(nil)
	for _, r := range results {
		if !r.Passed() {
			t.Errorf("case %q: %s", r.Name, strings.Join(r.Diffs, "; "))
		}
	}
	if len(results) == 0 {
		t.Error("the example's rule tests ran no case")
	}
	if len(compiled) != 0 {
		t.Errorf("serving the loaded configuration compiled %d expressions again: %q", len(compiled), compiled)
	}
}
