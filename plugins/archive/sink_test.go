package archive

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

func TestConformance(t *testing.T) {
	for _, compress := range []string{"gzip", "none"} {
		t.Run(compress, func(t *testing.T) {
			sinktest.Run(t, func(t *testing.T) (sdk.Sink, json.RawMessage) {
				return newSink(), sinktest.Config(t, map[string]any{"dir": t.TempDir(), "compress": compress})
			})
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want []string // phrases the error must contain, all of them
	}{
		{"no-dir", `{}`, []string{`"dir" is required`}},
		{"empty-dir", `{"dir": " "}`, []string{`"dir" is required`}},
		{"unknown-key", `{"dir": "d", "rotation": "1h"}`, []string{`"rotation"`}},
		{"rotate-not-duration", `{"dir": "d", "rotate": "hourly"}`, []string{`"rotate"`, `"hourly"`, `"24h"`}},
		{"rotate-zero", `{"dir": "d", "rotate": "0s"}`, []string{`"rotate"`, "positive"}},
		{"rotate-number", `{"dir": "d", "rotate": 3600}`, []string{`"rotate"`}},
		{"max-size-unit", `{"dir": "d", "max_size": "64MB/s"}`, []string{`"max_size"`, "invalid size", `"64MiB"`}},
		{"max-size-zero", `{"dir": "d", "max_size": 0}`, []string{`"max_size"`, "at least 1 byte"}},
		{"max-size-negative", `{"dir": "d", "max_size": "-1KiB"}`, []string{`"max_size"`}},
		{"max-size-bool", `{"dir": "d", "max_size": true}`, []string{`"max_size"`}},
		{"compress", `{"dir": "d", "compress": "zstd"}`, []string{`"compress" = "zstd"`, `"gzip" or "none"`}},
		{"prefix-empty", `{"dir": "d", "prefix": ""}`, []string{`"prefix"`}},
		{"prefix-slash", `{"dir": "d", "prefix": "a/b"}`, []string{`"prefix" = "a/b"`, "without slashes"}},
		{"every-problem", `{"rotate": "x", "compress": "lz4", "max_size": "big"}`,
			[]string{`"dir"`, `"rotate"`, `"compress"`, `"max_size"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := newSink().Configure(context.Background(), json.RawMessage(tt.raw))
			if err == nil {
				t.Fatalf("Configure(%s) = nil, want an error containing %q", tt.raw, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Configure(%s) = %q, want it to contain %q", tt.raw, err, w)
				}
			}
		})
	}
}

func TestConfigValues(t *testing.T) {
	tests := []struct {
		raw  string
		want settings
	}{
		{`{"dir": "data/archive"}`, settings{dir: "data/archive", rotate: time.Hour, maxSize: 64 << 20, gzip: true, prefix: "events"}},
		{`{"dir": "d", "rotate": "15m", "max_size": "512KiB", "compress": "none", "prefix": "calls"}`,
			settings{dir: "d", rotate: 15 * time.Minute, maxSize: 512 << 10, prefix: "calls"}},
		{`{"dir": "d", "max_size": "1GB"}`, settings{dir: "d", rotate: time.Hour, maxSize: 1e9, gzip: true, prefix: "events"}},
		{`{"dir": "d", "max_size": "1.5 mib"}`, settings{dir: "d", rotate: time.Hour, maxSize: 3 << 19, gzip: true, prefix: "events"}},
		{`{"dir": "d", "max_size": 1048576}`, settings{dir: "d", rotate: time.Hour, maxSize: 1 << 20, gzip: true, prefix: "events"}},
		{`{"dir": "d", "max_size": "4096"}`, settings{dir: "d", rotate: time.Hour, maxSize: 4096, gzip: true, prefix: "events"}},
	}
	for _, tt := range tests {
		got, err := parseConfig(json.RawMessage(tt.raw))
		if err != nil || got != tt.want {
			t.Errorf("parseConfig(%s) = %+v, %v, want %+v", tt.raw, got, err, tt.want)
		}
	}
}

func TestConfigureHasNoSideEffects(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "archive")
	s := newSink()
	if err := s.Configure(context.Background(), sinktest.Config(t, map[string]any{"dir": dir})); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("after Configure, Stat(dir) = %v, want not exist (Configure must not create the dir)", err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("Close = %v", err)
	}
}

// TestFileFormat goes through the real gRPC path and checks every line.
// That Deliver fsyncs before it answers Delivered cannot be observed by a
// unit test (only a power cut would show it); write and sync are one
// function, write, whose error turns into Retry (TestWriteFailureRetries).
func TestFileFormat(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "archive")
	s := sinktest.Serve(t, newSink())
	ctx := context.Background()
	if err := s.Configure(ctx, sinktest.Config(t, map[string]any{"dir": dir, "prefix": "calls"})); err != nil {
		t.Fatal(err)
	}
	batch := []sdk.Event{sinktest.NewEvent(1), sinktest.NewEvent(2), sinktest.NewEvent(3)}
	batch[1].Transformed = json.RawMessage(`{"text": "Interested lead from 919876543210 <b>&</b> हाँ"}`)
	batch[2].Headers = nil
	sinktest.DeliverAll(t, s, batch)
	if err := s.(sdk.Closer).Close(ctx); err != nil {
		t.Fatalf("Close = %v", err)
	}

	files := list(t, dir)
	if len(files) != 1 || !regexp.MustCompile(`^calls-\d{8}T\d{6}\.\d{9}Z\.jsonl$`).MatchString(files[0]) {
		t.Fatalf("files after Close = %q, want one calls-<20060102T150405.000000000Z>.jsonl (not compressed at Close)", files)
	}
	info, err := os.Stat(dir)
	if err != nil || info.Mode().Perm() != 0o750 {
		t.Errorf("dir mode = %v, %v, want 0750", info.Mode().Perm(), err)
	}
	lines := readLines(t, filepath.Join(dir, files[0]))
	if len(lines) != len(batch) {
		t.Fatalf("file has %d lines, want %d", len(lines), len(batch))
	}
	for i, line := range lines {
		var got map[string]json.RawMessage
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatalf("line %d does not parse: %v\n%s", i, err, line)
		}
		keys := slices.Sorted(maps.Keys(got))
		want := []string{"attempt", "body", "headers", "id", "received_at", "route", "source"}
		if batch[i].Transformed != nil {
			want = append(want, "payload")
			slices.Sort(want)
		}
		if !slices.Equal(keys, want) {
			t.Errorf("line %d keys = %q, want %q", i, keys, want)
		}
		var rec struct {
			ID         string            `json:"id"`
			Source     string            `json:"source"`
			Route      string            `json:"route"`
			ReceivedAt string            `json:"received_at"`
			Attempt    int               `json:"attempt"`
			Headers    map[string]string `json:"headers"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		ev := batch[i]
		if rec.ID != ev.ID || rec.Source != ev.Source || rec.Route != ev.Route || rec.Attempt != ev.Attempt {
			t.Errorf("line %d = %+v, want the fields of %+v", i, rec, ev)
		}
		if want := ev.ReceivedAt.UTC().Format(time.RFC3339Nano); rec.ReceivedAt != want || !strings.HasSuffix(want, "Z") {
			t.Errorf("line %d received_at = %q, want %q (RFC 3339, nanoseconds, UTC)", i, rec.ReceivedAt, want)
		}
		if rec.Headers == nil || len(rec.Headers) != len(ev.Headers) {
			t.Errorf("line %d headers = %v, want %v (an object, never null)", i, rec.Headers, ev.Headers)
		}
		if !bytes.Equal(got["body"], compact(t, ev.Body)) {
			t.Errorf("line %d body = %s, want the input body %s", i, got["body"], compact(t, ev.Body))
		}
		if ev.Transformed != nil && !bytes.Equal(got["payload"], compact(t, ev.Transformed)) {
			t.Errorf("line %d payload = %s, want %s", i, got["payload"], compact(t, ev.Transformed))
		}
	}
}

func TestRotateBySize(t *testing.T) {
	dir := t.TempDir()
	s := newSink()
	sinktest.Configure(t, s, map[string]any{"dir": dir, "max_size": "4KiB", "rotate": "1h"})
	const batches, perBatch = 5, 4 // ~1.3 KB an event: each batch passes 4 KiB
	for b := range batches {
		batch := make([]sdk.Event, perBatch)
		for i := range batch {
			batch[i] = sinktest.NewEvent(b*perBatch + i)
		}
		sinktest.DeliverAll(t, s, batch)
	}
	waitFor(t, func() bool { return count(list(t, dir), gzExt) == batches })
	closeSink(t, s)
	files := list(t, dir)
	if n := count(files, ext); n != 0 {
		t.Errorf("files = %q, want no .jsonl left (every batch filled a file)", files)
	}
	ids := map[string]bool{}
	for _, f := range files {
		for _, line := range gunzipLines(t, filepath.Join(dir, f)) {
			ids[idOf(t, line)] = true
		}
	}
	if len(ids) != batches*perBatch {
		t.Errorf("archived %d distinct events, want %d", len(ids), batches*perBatch)
	}
}

func TestRotateByAge(t *testing.T) {
	dir := t.TempDir()
	s := newSink()
	sinktest.Configure(t, s, map[string]any{"dir": dir, "rotate": "50ms"})
	sinktest.DeliverAll(t, s, []sdk.Event{sinktest.NewEvent(1), sinktest.NewEvent(2)})
	// No further Deliver: the ticker must rotate the file, then compress it.
	waitFor(t, func() bool { files := list(t, dir); return count(files, gzExt) == 1 && count(files, ext) == 0 })
	sinktest.DeliverAll(t, s, []sdk.Event{sinktest.NewEvent(3)})
	waitFor(t, func() bool { return count(list(t, dir), gzExt) == 2 })
	closeSink(t, s)

	files := list(t, dir)
	if len(files) != 2 {
		t.Fatalf("files = %q, want 2 .jsonl.gz", files)
	}
	got := len(gunzipLines(t, filepath.Join(dir, files[0]))) + len(gunzipLines(t, filepath.Join(dir, files[1])))
	if got != 3 {
		t.Errorf("compressed files hold %d lines, want 3", got)
	}
}

func TestCrashRecovery(t *testing.T) {
	dir := t.TempDir()
	good := [][]byte{line(t, sinktest.NewEvent(1)), line(t, sinktest.NewEvent(2))}
	torn := line(t, sinktest.NewEvent(3))
	torn = torn[:len(torn)/2]
	write(t, dir, "events-20250101T000000.000000000Z.jsonl", bytes.Join(append(good, torn), nil))
	write(t, dir, "events-20250101T010000.000000000Z.jsonl.gz.tmp", []byte("half a gzip"))
	// Compressed and renamed, but the crash came before the .jsonl was removed.
	write(t, dir, "events-20250101T020000.000000000Z.jsonl", bytes.Join(good, nil))
	write(t, dir, "events-20250101T020000.000000000Z.jsonl.gz", gzipped(t, bytes.Join(good, nil)))
	write(t, dir, "other-20250101T000000.000000000Z.jsonl", torn) // another prefix: not ours

	s := newSink()
	sinktest.Configure(t, s, map[string]any{"dir": dir})
	sinktest.DeliverAll(t, s, []sdk.Event{sinktest.NewEvent(4)})
	closeSink(t, s) // waits for the compression of the leftover

	files := list(t, dir)
	want := []string{
		"events-20250101T000000.000000000Z.jsonl.gz",
		"events-20250101T020000.000000000Z.jsonl.gz",
		"other-20250101T000000.000000000Z.jsonl",
	}
	var current []string
	for _, f := range files {
		if !slices.Contains(want, f) {
			current = append(current, f)
		}
	}
	if !slices.Equal(slices.DeleteFunc(slices.Clone(files), func(f string) bool { return slices.Contains(current, f) }), want) || len(current) != 1 {
		t.Fatalf("files after recovery = %q, want %q plus the current .jsonl", files, want)
	}
	lines := gunzipLines(t, filepath.Join(dir, want[0]))
	if len(lines) != 2 || idOf(t, lines[0]) != "sinktest-000001" || idOf(t, lines[1]) != "sinktest-000002" {
		t.Errorf("recovered file holds %d lines %q, want the 2 whole ones (torn line dropped)", len(lines), lines)
	}
	if lines := gunzipLines(t, filepath.Join(dir, want[1])); len(lines) != 2 {
		t.Errorf("already-compressed file holds %d lines, want 2 (left alone)", len(lines))
	}
	if lines := readLines(t, filepath.Join(dir, current[0])); len(lines) != 1 || idOf(t, lines[0]) != "sinktest-000004" {
		t.Errorf("current file = %q, want the one new event", lines)
	}
}

func TestCrashRecoveryWithoutCompression(t *testing.T) {
	dir := t.TempDir()
	whole := line(t, sinktest.NewEvent(1))
	name := "events-20250101T000000.000000000Z.jsonl"
	write(t, dir, name, append(slices.Clone(whole), `{"id":"torn`...))

	s := newSink()
	sinktest.Configure(t, s, map[string]any{"dir": dir, "compress": "none"})
	sinktest.DeliverAll(t, s, []sdk.Event{sinktest.NewEvent(2)})
	closeSink(t, s)

	got, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil || !bytes.Equal(got, whole) {
		t.Errorf("leftover after recovery = %q, %v; want only its whole line %q", got, err, whole)
	}
	if n := count(list(t, dir), gzExt); n != 0 {
		t.Errorf("%d .jsonl.gz files with compress = none, want 0", n)
	}
}

func TestWriteFailureRetries(t *testing.T) {
	dir := t.TempDir()
	s := newSink()
	sinktest.Configure(t, s, map[string]any{"dir": dir, "compress": "none"})
	sinktest.DeliverAll(t, s, []sdk.Event{sinktest.NewEvent(1)})

	s.mu.Lock()
	s.cur.Close() // the next write fails, as on a failing disk
	s.mu.Unlock()
	batch := []sdk.Event{sinktest.NewEvent(2), sinktest.NewEvent(3)}
	results, err := s.Deliver(context.Background(), batch)
	if err != nil || len(results) != len(batch) {
		t.Fatalf("Deliver on a failing file = %v, %v; want one result per event", results, err)
	}
	for i, r := range results {
		if _, retry := r.IsRetry(); !retry || r.Err() == nil {
			t.Errorf("result %d on a failing file = %v, want retry with the error", i, r)
		}
	}
	// The failed file is retired; the retried batch lands in a new one.
	sinktest.DeliverAll(t, s, batch)
	closeSink(t, s)
	if files := list(t, dir); len(files) != 2 {
		t.Errorf("files = %q, want the failed file and a new one", files)
	}
}

func TestDeliverUnusableDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "file")
	write(t, filepath.Dir(dir), "file", []byte("not a directory"))
	s := newSink()
	sinktest.Configure(t, s, map[string]any{"dir": dir})
	if _, err := s.Deliver(context.Background(), []sdk.Event{sinktest.NewEvent(1)}); err == nil || !strings.Contains(err.Error(), "archive dir") {
		t.Errorf("Deliver into a dir that is a file = %v, want an error about the archive dir", err)
	}
	closeSink(t, s)
}

func TestDeliverAfterClose(t *testing.T) {
	s := newSink()
	sinktest.Configure(t, s, map[string]any{"dir": t.TempDir()})
	closeSink(t, s)
	if _, err := s.Deliver(context.Background(), []sdk.Event{sinktest.NewEvent(1)}); err == nil {
		t.Errorf("Deliver after Close = nil error, want one")
	}
}

// helpers

func closeSink(t testing.TB, s sdk.Closer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close = %v", err)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func list(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func count(files []string, suffix string) int {
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, suffix) {
			n++
		}
	}
	return n
}

func readLines(t testing.TB, p string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return splitLines(t, b)
}

func gunzipLines(t testing.TB, p string) [][]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("gunzip %s: %v", p, err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(zr); err != nil {
		t.Fatalf("gunzip %s: %v", p, err)
	}
	return splitLines(t, buf.Bytes())
}

func splitLines(t testing.TB, b []byte) [][]byte {
	t.Helper()
	if len(b) > 0 && b[len(b)-1] != '\n' {
		t.Errorf("file does not end with a newline: ...%q", b[max(0, len(b)-40):])
	}
	var lines [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<30)
	for sc.Scan() {
		lines = append(lines, slices.Clone(sc.Bytes()))
	}
	return lines
}

func idOf(t testing.TB, line []byte) string {
	t.Helper()
	var r struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("line does not parse: %v: %s", err, line)
	}
	return r.ID
}

func line(t testing.TB, ev sdk.Event) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(newRecord(&ev)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func write(t testing.TB, dir, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o640); err != nil {
		t.Fatal(err)
	}
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compact(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatalf("compact %s: %v", b, err)
	}
	return buf.Bytes()
}
