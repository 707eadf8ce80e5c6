package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"sync"
)

// newLogger returns the logger of serve and check, writing to w.
//
// format is "text", "json" or "auto". auto is text, except when w is the
// stream systemd connected to the journal (JOURNAL_STREAM names its
// device and inode, see systemd.exec(5)): then the time is left out, since
// the journal stamps every line itself, and each line starts with a
// syslog priority prefix (<3> error, <4> warning, <6> info, <7> debug),
// which journald strips and keeps as the entry's priority, so
// `journalctl -p warning` works. json always writes JSON with the time.
//
// When w is a writeBehind, auto looks at the writer behind it, and records
// at warn and above are written out before the call that logs them returns.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	h, err := newHandler(w, format, level)
	if err != nil {
		return nil, err
	}
	if b, ok := w.(*writeBehind); ok {
		h = flushAtWarn{h, b}
	}
	return slog.New(h), nil
}

func newHandler(w io.Writer, format, level string) (slog.Handler, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	case "text":
		return slog.NewTextHandler(w, opts), nil
	case "auto":
		dest := w
		if b, ok := w.(*writeBehind); ok {
			dest = b.w
		}
		if !toJournal(dest, os.Getenv("JOURNAL_STREAM")) {
			return slog.NewTextHandler(w, opts), nil
		}
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
		return slog.NewTextHandler(&journalWriter{w: w}, opts), nil
	}
	return nil, fmt.Errorf("-log-format %q: want auto, text or json", format)
}

// toJournal reports whether w is the file that journalStream ("DEV:INODE",
// the JOURNAL_STREAM that systemd sets) names. Comparing the inode, not
// only the variable's presence, matters: a process started from a service
// inherits JOURNAL_STREAM even when its stderr goes elsewhere.
func toJournal(w io.Writer, journalStream string) bool {
	f, ok := w.(*os.File)
	if !ok || journalStream == "" {
		return false
	}
	var dev, ino uint64
	if n, err := fmt.Sscanf(journalStream, "%d:%d", &dev, &ino); n != 2 || err != nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	// fi.Sys() is a *syscall.Stat_t on every Unix; reflect reads Dev and Ino
	// without a build-tagged file per platform (there are none elsewhere).
	st := reflect.Indirect(reflect.ValueOf(fi.Sys()))
	if st.Kind() != reflect.Struct {
		return false
	}
	d, i := st.FieldByName("Dev"), st.FieldByName("Ino")
	if !d.IsValid() || !i.IsValid() || !d.CanUint() || !i.CanUint() {
		return false
	}
	return d.Uint() == dev && i.Uint() == ino
}

// journalWriter puts the syslog priority of each slog text record in front
// of it for journald. slog's TextHandler writes one record per Write,
// starting with "level=" once the time is left out.
type journalWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (j *journalWriter) Write(p []byte) (int, error) {
	prio := "<6>" // info
	if rest, ok := bytes.CutPrefix(p, []byte("level=")); ok {
		lvl, _, _ := bytes.Cut(rest, []byte(" ")) // "INFO", "WARN+2"
		switch {
		case bytes.HasPrefix(lvl, []byte("DEBUG")):
			prio = "<7>"
		case bytes.HasPrefix(lvl, []byte("WARN")):
			prio = "<4>"
		case bytes.HasPrefix(lvl, []byte("ERROR")):
			prio = "<3>"
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.w.Write(append([]byte(prio), p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}
