package archive

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/gzip"
	"github.com/pipelined/pipelined/plugins/internal/jsoncompact"
	"github.com/pipelined/pipelined/sdk"
)

const (
	timeLayout = "20060102T150405.000000000Z"
	ext        = ".jsonl"
	gzExt      = ".jsonl.gz"
	tmpExt     = ".jsonl.gz.tmp"
)

// fileName is the name of a file started at t.
func fileName(prefix string, t time.Time) string {
	return prefix + "-" + t.UTC().Format(timeLayout) + ext
}

// record is one line of an archive file, as encoding/json writes it:
// appendRecord writes the same bytes without it, and the tests compare the
// two.
type record struct {
	recordHead
	Body    json.RawMessage `json:"body"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// recordHead is a record without its body and payload.
type recordHead struct {
	ID         string            `json:"id"`
	Source     string            `json:"source"`
	Route      string            `json:"route"`
	ReceivedAt string            `json:"received_at"`
	Attempt    int               `json:"attempt"`
	Headers    map[string]string `json:"headers"`
}

func newRecord(e *sdk.Event) record {
	h := e.Headers
	if h == nil {
		h = map[string]string{}
	}
	return record{
		recordHead: recordHead{
			ID:         e.ID,
			Source:     e.Source,
			Route:      e.Route,
			ReceivedAt: e.ReceivedAt.UTC().Format(time.RFC3339Nano),
			Attempt:    e.Attempt,
			Headers:    h,
		},
		Body:    e.Body,
		Payload: e.Transformed,
	}
}

// appendRecord appends e's line to dst: byte for byte what a
// json.Encoder with SetEscapeHTML(false) writes for newRecord(e), but
// without reflection, and with the body and the payload compacted by
// jsoncompact (encoding/json compacts a RawMessage with its own scanner,
// once the most of a line's cost). keys is scratch space for the header
// names; appendRecord returns it for reuse. When the body or the payload
// is not JSON it returns dst as it was and encoding/json's own error.
// TestAppendRecordIsEncodingJSON and FuzzAppendRecord hold it to
// encoding/json.
func appendRecord(dst []byte, keys []string, e *sdk.Event) ([]byte, []string, error) {
	line := append(dst, `{"id":`...)
	line = appendString(line, e.ID)
	line = append(line, `,"source":`...)
	line = appendString(line, e.Source)
	line = append(line, `,"route":`...)
	line = appendString(line, e.Route)
	// RFC 3339 holds nothing a JSON string escapes.
	line = append(line, `,"received_at":"`...)
	line = e.ReceivedAt.UTC().AppendFormat(line, time.RFC3339Nano)
	line = append(line, `","attempt":`...)
	line = strconv.AppendInt(line, int64(e.Attempt), 10)
	line = append(line, `,"headers":{`...)
	keys = keys[:0]
	for k := range e.Headers {
		keys = append(keys, k)
	}
	slices.Sort(keys) // as encoding/json orders a map's keys
	for i, k := range keys {
		if i > 0 {
			line = append(line, ',')
		}
		line = appendString(line, k)
		line = append(line, ':')
		line = appendString(line, e.Headers[k])
	}
	clear(keys) // keep no header alive between batches
	line = append(line, `},"body":`...)
	var err error
	if e.Body == nil {
		line = append(line, "null"...)
	} else if line, err = jsoncompact.Append(line, e.Body); err != nil {
		return dst, keys, encodeError(e)
	}
	if len(e.Transformed) > 0 {
		line = append(line, `,"payload":`...)
		if line, err = jsoncompact.Append(line, e.Transformed); err != nil {
			return dst, keys, encodeError(e)
		}
	}
	return append(line, "}\n"...), keys, nil
}

// encodeError returns the error encoding/json gives for newRecord(e).
func encodeError(e *sdk.Event) error {
	enc := json.NewEncoder(io.Discard)
	enc.SetEscapeHTML(false)
	return enc.Encode(newRecord(e))
}

// appendString appends s as a JSON string, escaped as encoding/json
// escapes it without HTML escaping: '"', '\\' and control characters,
// invalid UTF-8 as U+FFFD, and U+2028 and U+2029.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case c == '\u2028' || c == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// recoverLeftovers prepares the directory after a start: it removes stale .tmp
// files, removes a .jsonl whose .jsonl.gz is complete, cuts a torn last line
// from every other .jsonl and returns those to compress (none when compress
// is "none").
func (s *sink) recoverLeftovers() ([]string, error) {
	entries, err := os.ReadDir(s.cfg.dir)
	if err != nil {
		return nil, fmt.Errorf("read archive dir: %w", err)
	}
	names := map[string]bool{}
	for _, e := range entries {
		names[e.Name()] = true
	}
	var todo []string
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(name, s.cfg.prefix+"-") {
			continue
		}
		p := filepath.Join(s.cfg.dir, name)
		switch {
		case strings.HasSuffix(name, tmpExt):
			if err := os.Remove(p); err != nil {
				return nil, fmt.Errorf("remove stale %s: %w", p, err)
			}
			s.log.Info("removed an unfinished compression", "file", p)
		case strings.HasSuffix(name, ext):
			if names[name+".gz"] {
				// Compressed and renamed, but the crash came before the remove.
				if err := os.Remove(p); err != nil {
					return nil, fmt.Errorf("remove compressed %s: %w", p, err)
				}
				s.log.Info("removed a file already compressed", "file", p)
				continue
			}
			cut, err := cutTornLine(p)
			if err != nil {
				return nil, err
			}
			if cut > 0 {
				s.log.Warn("cut a torn last line left by a crash", "file", p, "bytes", cut)
			}
			if s.cfg.gzip {
				todo = append(todo, p)
			}
		}
	}
	return todo, nil
}

// cutTornLine truncates the file at p after its last '\n' and returns how
// many bytes it cut.
func cutTornLine(p string) (int64, error) {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("open leftover: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("stat leftover: %w", err)
	}
	end, err := lastLineEnd(f, fi.Size())
	if err != nil {
		return 0, fmt.Errorf("read leftover %s: %w", p, err)
	}
	if end == fi.Size() {
		return 0, nil
	}
	if err := f.Truncate(end); err != nil {
		return 0, fmt.Errorf("cut torn line of %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("sync %s: %w", p, err)
	}
	return fi.Size() - end, nil
}

// lastLineEnd returns the offset just past the last '\n' among the first
// size bytes of r, or 0 when there is none.
func lastLineEnd(r io.ReaderAt, size int64) (int64, error) {
	buf := make([]byte, 64<<10)
	for end := size; end > 0; {
		start := max(end-int64(len(buf)), 0)
		chunk := buf[:end-start]
		if _, err := r.ReadAt(chunk, start); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		for i := len(chunk) - 1; i >= 0; i-- {
			if chunk[i] == '\n' {
				return start + int64(i) + 1, nil
			}
		}
		end = start
	}
	return 0, nil
}

// compress gzips the complete lines of the .jsonl file p into p.gz,
// crash-safely: write p.gz.tmp, fsync, rename to p.gz, fsync the
// directory, then remove p.
func compress(p string) (err error) {
	src, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	end, err := lastLineEnd(src, fi.Size())
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}

	tmp := strings.TrimSuffix(p, ext) + tmpExt
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	defer func() {
		if err != nil {
			dst.Close()
			os.Remove(tmp)
		}
	}()
	// klauspost/compress's gzip (standard gzip files, which the tests read
	// back with the standard library) at its default level: ~half the CPU of
	// compress/gzip's, which was 29% of this plugin's under load.
	zw, err := gzip.NewWriterLevel(dst, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	zw.Name = filepath.Base(p)
	if _, err := io.Copy(zw, io.NewSectionReader(src, 0, end)); err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	if err := dst.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	if err := os.Rename(tmp, p+".gz"); err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("remove compressed original: %w", err)
	}
	return nil
}

// syncDir fsyncs a directory so that a file created or renamed in it
// survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir for sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
