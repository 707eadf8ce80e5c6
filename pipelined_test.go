package pipelined

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/rulestest"
)

// TestDefaultConfig keeps the reference configuration valid.
func TestDefaultConfig(t *testing.T) {
	c, err := config.Parse("pipeline.toml", DefaultConfig)
	if err != nil {
		t.Fatalf("Parse(pipeline.toml) = %v, want no error", err)
	}
	if len(c.Sources) != 1 || len(c.Sinks) != 2 || len(c.Routes) != 1 {
		t.Fatalf("Parse(pipeline.toml) = %d sources, %d sinks, %d routes, want 1, 2 (archive, db), 1", len(c.Sources), len(c.Sinks), len(c.Routes))
	}
	if got, want := c.Sources[0].DedupKey, "body.data.callSid"; got != want {
		t.Errorf("dedup_key = %q, want %q", got, want)
	}
	if _, err := c.SinkConfigJSON(0); err != nil {
		t.Errorf("SinkConfigJSON(0) = %v", err)
	}
}

// TestExampleConfigs keeps the example configurations valid.
func TestExampleConfigs(t *testing.T) {
	for _, f := range []string{"examples/callkaro/pipeline.toml"} {
		if _, err := config.Load(f); err != nil {
			t.Errorf("Load(%s) = %v, want no error", f, err)
		}
	}
}

// TestRuleTests runs the rule tests of the reference configuration, the
// files `pipelined test` finds next to pipeline.toml (pipeline_test.toml,
// tests/*.toml), the way it runs them: one subtest per case, which fails
// with the case's differences.
func TestRuleTests(t *testing.T) {
	var files []string
	for _, p := range rulestest.Patterns("pipeline.toml") {
		m, err := filepath.Glob(p)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Fatalf("no rule test files match %v; pipeline_test.toml should", rulestest.Patterns("pipeline.toml"))
	}
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			f, err := rulestest.Parse(file)
			if err != nil {
				t.Fatal(err)
			}
			suite, err := rulestest.Load(f, func() (*config.Config, error) { return config.Load("pipeline.toml") })
			if err != nil {
				t.Fatalf("load pipeline.toml for %s: %v", file, err)
			}
			results := suite.Run(nil)
			if len(results) == 0 {
				t.Fatalf("%s has no case", file)
			}
			for _, r := range results {
				t.Run(r.Name, func(t *testing.T) {
					if !r.Passed() {
						t.Error(strings.Join(r.Diffs, "\n"))
					}
				})
			}
		})
	}
}
