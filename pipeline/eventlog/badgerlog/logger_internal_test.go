package badgerlog

import (
	"log/slog"
	"testing"

	"github.com/pipelined/pipelined/internal/testlog"
)

// TestBadgerLoggerLevels: Badger's messages reach slog at the level an
// operator should read them at. The formats are Badger v4's own (db.go's
// monitorCache and flushMemtable, levels.go's compactions), with values
// like those they print.
func TestBadgerLoggerLevels(t *testing.T) {
	tests := []struct {
		name, format string
		args         []any
		log          func(badgerLogger, string, ...any)
		level        string
	}{
		{"cache advice", "%s might be too small. Metrics: %s\n", []any{"Block cache", "hit: 207 miss: 10202"}, badgerLogger.Warningf, "DEBUG"},
		{"cache life expectancy", "Cache life expectancy (in seconds): %+v\n", []any{" -- Histogram: ..."}, badgerLogger.Warningf, "DEBUG"},
		{"other warning", "While running doCompact: %v\n", []any{"no space left on device"}, badgerLogger.Warningf, "WARN"},
		{"error", "error flushing memtable to disk: %v, retrying", []any{"no space left on device"}, badgerLogger.Errorf, "ERROR"},
		{"info", "Lifetime L0 stalled for: %s\n", []any{"12ms"}, badgerLogger.Infof, "DEBUG"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf testlog.Buffer
			b := badgerLogger{slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			tt.log(b, tt.format, tt.args...)
			lines := buf.Lines(t, "")
			if len(lines) != 1 {
				t.Fatalf("logged %d lines, want 1: %s", len(lines), buf.String())
			}
			if got := lines[0]["level"]; got != tt.level {
				t.Errorf("level %v, want %s: %v", got, tt.level, lines[0]["msg"])
			}
		})
	}
}

// countingStringer counts the calls to its String method: fmt makes one
// each time it formats it.
type countingStringer struct{ calls *int }

func (c countingStringer) String() string { *c.calls++; return "formatted" }

// TestBadgerLoggerFormatsOnlyWhatItLogs: Badger's Debugf and Infof lines
// (four per batch it writes) are not even formatted while the level is
// above debug, and are at debug.
func TestBadgerLoggerFormatsOnlyWhatItLogs(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		t.Run(level.String(), func(t *testing.T) {
			var buf testlog.Buffer
			b := badgerLogger{slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level}))}
			calls := 0
			b.Debugf("writeRequests called. %s", countingStringer{&calls})
			b.Infof("Lifetime L0 stalled for: %s", countingStringer{&calls})
			wantCalls, wantLines := 0, 0
			if level == slog.LevelDebug {
				wantCalls, wantLines = 2, 2
			}
			if calls != wantCalls {
				t.Errorf("formatted %d times, want %d", calls, wantCalls)
			}
			if n := len(buf.Lines(t, "")); n != wantLines {
				t.Errorf("logged %d lines, want %d: %s", n, wantLines, buf.String())
			}
		})
	}
}
