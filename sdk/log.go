package sdk

import (
	"log/slog"
	"os"
	"strings"
)

// stderr is the plugin's real standard error, kept before go-plugin's Serve
// replaces os.Stderr with a pipe that the host discards.
var stderr = os.Stderr

// Logger returns a logger whose records reach the host's log at their own
// level, tagged with the sink's name. It writes JSON lines with @level and
// @message to the plugin's standard error, which go-plugin reads line by
// line; the host adds the time. Never write to stdout in a plugin.
func Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				return slog.Attr{}
			case slog.LevelKey:
				return slog.String("@level", strings.ToLower(a.Value.String()))
			case slog.MessageKey:
				return slog.String("@message", a.Value.String())
			}
			return a
		},
	}))
}
