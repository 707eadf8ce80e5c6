package daemon

import (
	"fmt"

	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/pluginhost"
)

// PluginSpecs returns how to start each sink's plugin.
func PluginSpecs(cfg *config.Config) ([]pluginhost.Spec, error) {
	specs := make([]pluginhost.Spec, len(cfg.Sinks))
	for i, s := range cfg.Sinks {
		raw, err := cfg.SinkConfigJSON(i)
		if err != nil {
			return nil, fmt.Errorf("sink %q: config: %w", s.Name, err)
		}
		specs[i] = pluginhost.Spec{Sink: s.Name, Plugin: s.Plugin, Command: s.Command, Dirs: cfg.Plugins.Dirs, SHA256: s.SHA256, Config: raw, Dir: cfg.BaseDir(),
			Where: func(key string) string { return cfg.SinkConfigPos(i, key) }}
	}
	return specs, nil
}
