package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestLoggerFormats checks what -log-format writes, under journald
// (JOURNAL_STREAM names stderr's device and inode) and elsewhere.
func TestLoggerFormats(t *testing.T) {
	f, st := stderrFile(t)
	journal := fmt.Sprintf("%d:%d", st.Dev, st.Ino)

	tests := []struct {
		name, format, journalStream string
		want                        []string // the lines written, with the time cut out where there is one
	}{
		{"auto under journald", "auto", journal, []string{
			`<6>level=INFO msg="pipelined is ready" sinks=2`,
			`<4>level=WARN msg="plugin restarted" sink=archive`,
			`<3>level=ERROR msg="close event log" err=boom`,
		}},
		{"auto elsewhere", "auto", "", []string{
			`time=T level=INFO msg="pipelined is ready" sinks=2`,
			`time=T level=WARN msg="plugin restarted" sink=archive`,
			`time=T level=ERROR msg="close event log" err=boom`,
		}},
		{"auto with another process's journal stream", "auto", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), []string{
			`time=T level=INFO msg="pipelined is ready" sinks=2`,
			`time=T level=WARN msg="plugin restarted" sink=archive`,
			`time=T level=ERROR msg="close event log" err=boom`,
		}},
		{"text under journald keeps the time", "text", journal, []string{
			`time=T level=INFO msg="pipelined is ready" sinks=2`,
			`time=T level=WARN msg="plugin restarted" sink=archive`,
			`time=T level=ERROR msg="close event log" err=boom`,
		}},
		{"json", "json", journal, []string{
			`{"time":"T","level":"INFO","msg":"pipelined is ready","sinks":2}`,
			`{"time":"T","level":"WARN","msg":"plugin restarted","sink":"archive"}`,
			`{"time":"T","level":"ERROR","msg":"close event log","err":"boom"}`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("JOURNAL_STREAM", tt.journalStream)
			if err := f.Truncate(0); err != nil {
				t.Fatal(err)
			}
			f.Seek(0, io.SeekStart)
			log, err := newLogger(f, tt.format, "info")
			if err != nil {
				t.Fatalf("newLogger(%q) = %v", tt.format, err)
			}
			log.Debug("not shown")
			log.Info("pipelined is ready", "sinks", 2)
			log.Warn("plugin restarted", "sink", "archive")
			log.Error("close event log", "err", "boom")
			b, _ := os.ReadFile(f.Name())
			got := strings.Split(strings.TrimSpace(string(b)), "\n")
			for i := range got {
				got[i] = cutTime(got[i])
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("-log-format %s with JOURNAL_STREAM=%q wrote\n%s\nwant\n%s", tt.format, tt.journalStream, strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}

	for _, bad := range [][2]string{{"xml", "info"}, {"text", "loud"}} {
		if _, err := newLogger(io.Discard, bad[0], bad[1]); err == nil {
			t.Errorf("newLogger(%q, %q) = nil error, want one", bad[0], bad[1])
		}
	}
}

// cutTime replaces the value of time= or "time": with T.
func cutTime(line string) string {
	if rest, ok := strings.CutPrefix(line, "time="); ok {
		_, after, _ := strings.Cut(rest, " ")
		return "time=T " + after
	}
	if rest, ok := strings.CutPrefix(line, `{"time":"`); ok {
		_, after, _ := strings.Cut(rest, `"`)
		return `{"time":"T"` + after
	}
	return line
}

// stderrFile creates a file to stand for stderr and returns it with its
// device and inode, which JOURNAL_STREAM names under journald.
func stderrFile(t *testing.T) (*os.File, syscall.Stat_t) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return f, st
}
