package pluginhost

import (
	"context"
	"io"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// newHCLogger returns the hclog.Logger that go-plugin gets for one plugin.
// It writes nothing itself; a sink forwards every record to log:
//   - lines the plugin wrote to stderr (go-plugin logs them through a logger
//     named after the binary, binName) keep their level: sdk.Logger writes
//     JSON with @level and @message, other lines arrive at Debug;
//   - go-plugin's own messages ("starting plugin", "plugin address", "plugin
//     process exited") go to Debug unless they are warnings or errors about
//     the host side; the supervisor logs exits itself.
func newHCLogger(log *slog.Logger, binName string) hclog.Logger {
	il := hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Output: io.Discard,
		Level:  hclogLevel(log),
	})
	il.RegisterSink(&slogSink{log: log, binName: binName})
	return il
}

// hclogLevel is the most verbose hclog level log wants: go-plugin skips
// parsing plugin lines below the logger's level.
func hclogLevel(log *slog.Logger) hclog.Level {
	ctx := context.Background()
	switch {
	case log.Enabled(ctx, slog.LevelDebug-4):
		return hclog.Trace
	case log.Enabled(ctx, slog.LevelDebug):
		return hclog.Debug
	case log.Enabled(ctx, slog.LevelInfo):
		return hclog.Info
	case log.Enabled(ctx, slog.LevelWarn):
		return hclog.Warn
	}
	return hclog.Error
}

type slogSink struct {
	log     *slog.Logger
	binName string
}

func (s *slogSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	fromPlugin := name == s.binName
	lvl := slogLevel(level)
	if !fromPlugin && (lvl < slog.LevelWarn || msg == "plugin process exited") {
		lvl = slog.LevelDebug
	}
	ctx := context.Background()
	if !s.log.Enabled(ctx, lvl) {
		return
	}
	attrs := make([]any, 0, len(args)+2)
	for i := 0; i+1 < len(args); i += 2 {
		k, ok := args[i].(string)
		if !ok {
			continue
		}
		// go-plugin adds the plugin's @timestamp as "timestamp" (zero when
		// the plugin leaves it out, as sdk.Logger does); slog has its own.
		if fromPlugin && k == "timestamp" {
			continue
		}
		attrs = append(attrs, k, args[i+1])
	}
	if !fromPlugin && name != "" {
		attrs = append(attrs, "logger", name)
	}
	s.log.Log(ctx, lvl, msg, attrs...)
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug, hclog.NoLevel:
		return slog.LevelDebug
	case hclog.Info:
		return slog.LevelInfo
	case hclog.Warn:
		return slog.LevelWarn
	}
	return slog.LevelError
}
