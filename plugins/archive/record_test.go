package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// checkRecord fails when appendRecord writes other bytes, or another
// error, than encoding newRecord(ev) with encoding/json, after a line
// already in the buffer.
func checkRecord(t *testing.T, ev sdk.Event) {
	t.Helper()
	var want bytes.Buffer
	wantEnc := json.NewEncoder(&want)
	wantEnc.SetEscapeHTML(false)
	want.WriteString("earlier line\n")
	wantErr := wantEnc.Encode(newRecord(&ev))
	if wantErr != nil {
		want.Truncate(len("earlier line\n"))
	}
	got, _, err := appendRecord([]byte("earlier line\n"), []string{"stale", "scratch"}, &ev)
	if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
		t.Fatalf("appendRecord error = %v, encoding/json's %v", err, wantErr)
	}
	if string(got) != want.String() {
		t.Fatalf("appendRecord wrote\n%s\nencoding/json writes\n%s", got, want.Bytes())
	}
}

func TestAppendRecordIsEncodingJSON(t *testing.T) {
	callKaro, err := os.ReadFile("../../pipeline/ingest/testdata/call_ended.json")
	if err != nil {
		t.Fatal(err)
	}
	base := sdk.Event{ID: "019ae3f0-0000-7000-8000-000000000000", Source: "callkaro", Route: "all-calls",
		ReceivedAt: time.Date(2026, 12, 5, 9, 0, 0, 120, time.UTC), Attempt: 2,
		Headers: map[string]string{"content-type": "application/json", "x-<&>": "a\"b\u2028", "user-agent": "Go-http-client/1.1"}}
	for _, tc := range []struct {
		name            string
		body, transform []byte
		noHeaders       bool
		edit            func(*sdk.Event)
	}{
		{name: "CallKaro", body: callKaro},
		{name: "whitespace", body: []byte(" {\n \"a\" : [ 1 , 2 ] }\n")},
		{name: "transformed", body: callKaro, transform: []byte(`{ "text" : "lead <x> & y" }`)},
		{name: "line separator", body: []byte("{\"a\": \"x\u2028y\"}")},
		{name: "nil body", body: nil},
		{name: "no headers", body: []byte(`{}`), noHeaders: true},
		{name: "body not JSON", body: []byte(`{"a":`)},
		{name: "empty body", body: []byte{}},
		{name: "transform not JSON", body: []byte(`{}`), transform: []byte(`nope`)},
		{name: "escapes in every field", body: []byte(`{}`), edit: func(e *sdk.Event) {
			e.ID, e.Source, e.Route = "id\b\f\x01\x1f\x7f\"\\/", "s\n\r\t<>&", "r\u2029\u2028é"
			e.Headers = map[string]string{"b\xffad": "\xc3", "": "", "z": "\xe2\x80", "a\u00e9": "\U0001F600", "A": "x"}
		}},
		{name: "attempt and time", body: []byte(`{}`), edit: func(e *sdk.Event) {
			e.Attempt = -3
			e.ReceivedAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("IST", 5*3600+1800))
		}},
		{name: "year past 9999", body: []byte(`{}`), edit: func(e *sdk.Event) {
			e.ReceivedAt = time.Date(12026, 1, 2, 3, 4, 5, 100, time.UTC)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := base
			ev.Body, ev.Transformed = tc.body, tc.transform
			if tc.noHeaders {
				ev.Headers = nil
			}
			if tc.edit != nil {
				tc.edit(&ev)
			}
			checkRecord(t, ev)
		})
	}
}

// FuzzAppendRecord holds appendRecord to encoding/json on any body,
// payload, id, route, headers, attempt and time.
func FuzzAppendRecord(f *testing.F) {
	f.Add([]byte(`{"a": 1}`), []byte(nil), "id", "r", "h", "v", "h2", 1, int64(1))
	f.Add([]byte(` [1, "\u2028"] `), []byte(`{"t": true}`), "i\"d", "\x00\u2029", "\xff", "<&>", "", -1, int64(-1e18))
	f.Fuzz(func(t *testing.T, body, transform []byte, id, route, key, value, key2 string, attempt int, nanos int64) {
		checkRecord(t, sdk.Event{ID: id, Source: "s", Route: route, ReceivedAt: time.Unix(0, nanos), Attempt: attempt,
			Headers: map[string]string{key: value, key2: id}, Body: body, Transformed: transform})
	})
}

// BenchmarkRecord is one CallKaro event's archive line, by appendRecord
// and by encoding/json alone.
func BenchmarkRecord(b *testing.B) {
	body, err := os.ReadFile("../../pipeline/ingest/testdata/call_ended.json")
	if err != nil {
		b.Fatal(err)
	}
	ev := sdk.Event{ID: "019ae3f0-0000-7000-8000-000000000000", Source: "callkaro", Route: "all-calls",
		ReceivedAt: time.Now(), Attempt: 1, Body: body,
		Headers: map[string]string{"content-type": "application/json", "user-agent": "Go-http-client/1.1", "content-length": "1100"}}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	b.Run("appendRecord", func(b *testing.B) {
		b.ReportAllocs()
		var line []byte
		var keys []string
		for b.Loop() {
			var err error
			if line, keys, err = appendRecord(line[:0], keys, &ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf.Reset()
			if err := enc.Encode(newRecord(&ev)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestDeliverReusesLinesBuffer: Deliver keeps its batch's buffer (and
// appendRecord's scratch) for the next batch, so batches of every size, a
// smaller after a larger and with an event it refuses, must leave in the
// file exactly encoding/json's lines of the delivered events, in order.
func TestDeliverReusesLinesBuffer(t *testing.T) {
	dir := t.TempDir()
	s := newSink()
	sinktest.Configure(t, s, map[string]any{"dir": dir, "rotate": "1h", "compress": "none"})
	var want bytes.Buffer
	enc := json.NewEncoder(&want)
	enc.SetEscapeHTML(false)
	next := 0
	for _, size := range []int{20, 3, 1, 7} {
		batch := make([]sdk.Event, size)
		for i := range batch {
			batch[i] = sinktest.NewEvent(next)
			next++
		}
		batch[size/2].Headers = map[string]string{"X-Only-Here": strconv.Itoa(next)}
		if size > 1 {
			batch[0].Body = json.RawMessage(`{"cut":`) // refused: not JSON
		}
		results, err := s.Deliver(context.Background(), batch)
		if err != nil {
			t.Fatalf("Deliver(%d) = %v", size, err)
		}
		for i, r := range results {
			if refused := size > 1 && i == 0; r.IsPermanent() != refused || r.IsDelivered() == refused {
				t.Fatalf("batch of %d, event %d = %v, want refused %v", size, i, r, refused)
			}
			if r.IsDelivered() {
				if err := enc.Encode(newRecord(&batch[i])); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	closeSink(t, s)
	files := list(t, dir)
	if len(files) != 1 {
		t.Fatalf("files = %q, want one", files)
	}
	got, err := os.ReadFile(filepath.Join(dir, files[0]))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("file holds\n%s\nwant encoding/json's lines of the delivered events\n%s", got, want.Bytes())
	}
}
