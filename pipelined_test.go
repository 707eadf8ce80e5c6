package pipelined

import (
	"testing"

	"github.com/pipelined/pipelined/pipeline/config"
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
