package daemon

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"golang.org/x/time/rate"

	"github.com/pipelined/pipelined/pipeline/auth"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/pluginhost"
	"github.com/pipelined/pipelined/pipeline/rules"
)

// Compile builds what ingest serves from cfg: sources with their dedup
// programs and the router.
func Compile(cfg *config.Config) (ingest.Config, error) {
	ic := ingest.Config{MaxBody: int64(cfg.Server.MaxBody), MaxConcurrent: cfg.Server.MaxConcurrent}
	var errs []error
	var err error
	if ic.TrustedProxies, err = config.ParsePrefixes(cfg.Server.TrustedProxies); err != nil {
		errs = append(errs, fmt.Errorf("server.trusted_proxies: %w", err))
	}
	for i, s := range cfg.Sources {
		src := ingest.Source{Name: s.Name, Path: s.Path, DedupWindow: s.DedupWindow.Duration, KeepRejected: s.KeepRejected.Duration}
		spec, err := cfg.AuthSpec(i)
		if err == nil {
			src.Verifier, err = auth.New(spec)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("source %q: auth: %w", s.Name, err))
		}
		if s.Rate.PerSecond > 0 {
			burst := s.Burst
			if burst == 0 {
				burst = max(1, int(math.Ceil(s.Rate.PerSecond)))
			}
			src.Limiter = rate.NewLimiter(rate.Limit(s.Rate.PerSecond), burst)
		}
		if src.Allow, err = config.ParsePrefixes(s.AllowCIDRs); err != nil {
			errs = append(errs, fmt.Errorf("source %q: allow_cidrs: %w", s.Name, err))
		}
		if s.DedupKey == "" {
			src.DedupHeader = auth.DedupHeader(spec)
		}
		if s.DedupKey != "" {
			p, err := rules.CompileValue(s.DedupKey)
			if err != nil {
				errs = append(errs, fmt.Errorf("source %q: dedup_key: %w", s.Name, err))
			}
			src.DedupKey = p
		}
		if strings.TrimSpace(s.Accept) != "" {
			if src.Accept, err = rules.CompileBool(s.Accept); err != nil {
				errs = append(errs, fmt.Errorf("source %q: accept: %w", s.Name, err))
			}
		}
		if src.Schema, err = cfg.Schema(i); err != nil {
			errs = append(errs, fmt.Errorf("source %q: schema_file: %w", s.Name, err))
		}
		ic.Sources = append(ic.Sources, src)
	}
	routes := make([]rules.Route, len(cfg.Routes))
	for i, r := range cfg.Routes {
		routes[i] = rules.Route{Name: r.Name, When: r.When, Transform: r.Transform, To: r.To}
	}
	router, err := rules.NewRouter(routes)
	if err != nil {
		errs = append(errs, err)
	}
	ic.Router = router
	return ic, errors.Join(errs...)
}

// PluginSpecs returns how to start each sink's plugin.
func PluginSpecs(cfg *config.Config) ([]pluginhost.Spec, error) {
	specs := make([]pluginhost.Spec, len(cfg.Sinks))
	for i, s := range cfg.Sinks {
		raw, err := cfg.SinkConfigJSON(i)
		if err != nil {
			return nil, fmt.Errorf("sink %q: config: %w", s.Name, err)
		}
		specs[i] = pluginhost.Spec{Sink: s.Name, Plugin: s.Plugin, Command: s.Command, Dirs: cfg.Plugins.Dirs, SHA256: s.SHA256, Config: raw}
	}
	return specs, nil
}
