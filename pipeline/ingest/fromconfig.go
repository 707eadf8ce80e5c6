package ingest

import (
	"errors"
	"math"
	"strings"

	"golang.org/x/time/rate"

	"github.com/pipelined/pipelined/pipeline/config"
)

// FromConfig returns what ingest serves for cfg: its [config.Plan]
// (compiled once, when cfg was loaded) with a fresh rate limiter for each
// source that has a rate. It compiles nothing. cfg must come from
// config.Load or config.Parse.
func FromConfig(cfg *config.Config) (Config, error) {
	plan := cfg.Plan()
	if plan == nil {
		return Config{}, errors.New("the configuration was not compiled: load it with config.Load or config.Parse")
	}
	ic := Config{
		Sources:        make([]Source, len(cfg.Sources)),
		Router:         plan.Router,
		MaxBody:        int64(cfg.Server.MaxBody),
		MaxConcurrent:  cfg.Server.MaxConcurrent,
		MaxBodyMemory:  int64(cfg.Server.MaxBodyMemory),
		TrustedProxies: plan.TrustedProxies,
		LogRequests:    cfg.Server.LogRequests,
	}
	for i, s := range cfg.Sources {
		sp := plan.Sources[i]
		src := Source{
			Name:           s.Name,
			Path:           s.Path,
			DedupKey:       sp.DedupKey,
			DedupWindow:    s.DedupWindow.Duration,
			Verifier:       sp.Verifier,
			DedupHeader:    sp.DedupHeader,
			DeliveryHeader: strings.ToLower(sp.DeliveryHeader),
			Allow:          sp.Allow,
			Ignore:         sp.Ignore,
			Accept:         sp.Accept,
			Schema:         sp.Schema,
			KeepRejected:   s.KeepRejected.Duration,
			DropHeaders:    sp.DropHeaders,
		}
		src.Redactor = sp.Redactor
		src.KeepRejectedMax = int64(s.KeepRejectedMax)
		src.AllowDuplicateKeys = s.AllowDuplicateKeys
		src.AllowInvalidUTF8 = s.AllowInvalidUTF8
		if s.Rate.PerSecond > 0 {
			burst := s.Burst
			if burst == 0 {
				burst = max(1, int(math.Ceil(s.Rate.PerSecond)))
			}
			src.Limiter = rate.NewLimiter(rate.Limit(s.Rate.PerSecond), burst)
		}
		ic.Sources[i] = src
	}
	return ic, nil
}
