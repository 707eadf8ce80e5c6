package pluginhost

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// newHCLogger returns the hclog.Logger that go-plugin gets for one plugin.
// It writes nothing itself; a sink forwards every record to log:
//   - lines the plugin wrote to stderr (go-plugin logs them through a logger
//     named after the binary, binName) keep their level: sdk.Logger writes
//     JSON with @level and @message, other lines arrive at Debug;
//   - go-plugin's own messages ("starting plugin", "plugin address", "plugin
//     process exited") go to Debug unless they are warnings or errors about
//     the host side; the supervisor logs exits itself, with how the process
//     ended, which the exit's message tells tail.
func newHCLogger(log *slog.Logger, binName string, tail *tailWriter) hclog.Logger {
	il := hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Output: io.Discard,
		Level:  hclogLevel(log), // at most Error: the exit's message comes at Error
	})
	il.RegisterSink(&slogSink{log: log, binName: binName, tail: tail})
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

// goPluginKilled is go-plugin's warning when a plugin it asked to exit
// (at its stop, after Close) has not within 2s and it kills the process;
// pluginKilled is how the log says it.
const (
	goPluginKilled = "plugin failed to exit gracefully"
	pluginKilled   = "sink plugin did not exit within 2s of being asked to: killed (SIGKILL)"
)

type slogSink struct {
	log     *slog.Logger
	binName string
	tail    *tailWriter // told how the process ended; nil in tests
}

func (s *slogSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	fromPlugin := name == s.binName
	if !fromPlugin && msg == "plugin process exited" && s.tail != nil {
		for i := 0; i+1 < len(args); i += 2 {
			if k, _ := args[i].(string); k == "error" {
				s.tail.exited(fmt.Sprint(args[i+1]))
			}
		}
	}
	if fromPlugin && len(args) == 0 && strings.TrimSpace(msg) == "" {
		return // the blank lines of a panic's stack, which go-plugin logs too
	}
	lvl := slogLevel(level)
	if !fromPlugin && (lvl < slog.LevelWarn || msg == "plugin process exited") {
		lvl = slog.LevelDebug
	}
	if !fromPlugin && msg == goPluginKilled {
		msg = pluginKilled
	}
	ctx := context.Background()
	if !s.log.Enabled(ctx, lvl) {
		return
	}
	attrs := make([]slog.Attr, 0, len(args)/2+1)
	for i := 0; i+1 < len(args); i += 2 {
		k, ok := args[i].(string)
		if !ok {
			continue
		}
		v := args[i+1]
		if fromPlugin {
			// go-plugin adds the plugin's @timestamp as "timestamp" (zero
			// when the plugin leaves it out, as sdk.Logger does); slog has
			// its own.
			if k == "timestamp" {
				continue
			}
			v = pluginValue(v)
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	if fromPlugin {
		// go-plugin hands a plugin line's attributes over in the random
		// order of the map it decoded them into: sorted, every line of
		// one message reads alike.
		slices.SortFunc(attrs, func(a, b slog.Attr) int { return cmp.Compare(a.Key, b.Key) })
	} else if name != "" {
		attrs = append(attrs, slog.String("logger", name))
	}
	s.log.LogAttrs(ctx, lvl, msg, attrs...)
}

// pluginValue is v, a value go-plugin decoded from a plugin's JSON line, as
// the plugin logged it where JSON lost that: a number arrives as float64,
// and one that is a whole number (a size, a count) is logged as an integer,
// size=67108871 rather than size=6.7108871e+07, in maps and arrays too.
func pluginValue(v any) any {
	switch v := v.(type) {
	case float64:
		if v != math.Trunc(v) || math.Abs(v) > 1<<53 {
			return v
		}
		return int64(v)
	case map[string]any:
		for k, e := range v {
			v[k] = pluginValue(e)
		}
	case []any:
		for i, e := range v {
			v[i] = pluginValue(e)
		}
	}
	return v
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
