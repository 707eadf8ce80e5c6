package inspector_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/inspector"
)

// overviewRows serves the overview of sinks over db and returns each
// sink's row of it, by name.
func overviewRows(t *testing.T, db pipeline.Log, sinks []admin.SinkStatus) map[string]string {
	t.Helper()
	return sinkRows(t, db, sinks, "/ui/", regexp.MustCompile(`<th scope="row"><a href="/ui/events\?sink=([^"]+)">`))
}

// sinkRows serves the UI over db with sinks as their status and returns
// the rows of the page at path by sink, the sink's name the first group
// of name.
func sinkRows(t *testing.T, db pipeline.Log, sinks []admin.SinkStatus, path string, name *regexp.Regexp) map[string]string {
	t.Helper()
	ao := admin.Options{
		Log:                  db,
		Sinks:                func(context.Context) ([]admin.SinkStatus, error) { return sinks, nil },
		AllowUnauthenticated: true,
	}
	ao.UI = inspector.New(inspector.Options{Admin: ao})
	srv := httptest.NewServer(admin.Handler(ao))
	t.Cleanup(srv.Close)
	resp, body := get(t, client(t), srv.URL+path)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d", path, resp.StatusCode)
	}
	rows := map[string]string{}
	for _, row := range strings.Split(body, "<tr>")[1:] {
		row, _, _ = strings.Cut(row, "</tr>")
		if m := name.FindStringSubmatch(row); m != nil {
			rows[m[1]] = row
		}
	}
	for _, s := range sinks {
		if rows[s.Name] == "" {
			t.Fatalf("%s has no row for %s:\n%s", path, s.Name, body)
		}
	}
	return rows
}

// Last errors of the sinks crm, slack and db for [lastErrorsWhole].
const (
	shortErr = "503 Service Unavailable"
	longErr  = "Post https://hooks.example.com/services/T000/B000: dial tcp 10.0.0.5:443: connect: connection refused"
)

// hugeErr is as long as a last error gets (the dispatcher keeps 4 KiB).
var hugeErr = strings.Repeat("x", 4000) + " (the end)"

// lastErrorsWhole checks that the rows of crm, slack and db show their
// last errors (shortErr, longErr, hugeErr) whole, wrapped in their cells,
// unless longer than a few lines: then cut, saying how long, with the
// whole in the cell's title.
func lastErrorsWhole(t *testing.T, rows map[string]string) {
	t.Helper()
	for _, tt := range []struct {
		sink, shown string
		title       bool
	}{
		{"crm", ">" + shortErr + "<div", false},
		{"slack", ">" + longErr + "<div", false},
		{"db", ">" + strings.Repeat("x", 300) + "… (4010 bytes)<div", true},
	} {
		row := rows[tt.sink]
		if strings.Contains(row, `class="clip"`) || !strings.Contains(row, tt.shown) {
			t.Errorf("%s: the last error's cell does not show %q, unclipped:\n%s", tt.sink, tt.shown, row)
		}
		if got := strings.Contains(row, `<td class="err" title="`); got != tt.title {
			t.Errorf("%s: the last error's cell has a title = %v, want %v:\n%s", tt.sink, got, tt.title, row)
		}
		if tt.title && !strings.Contains(row, `<td class="err" title="`+hugeErr+`">`) {
			t.Errorf("%s: the cell's title is not the whole error:\n%s", tt.sink, row)
		}
	}
}

// TestDeadLetterIndexShowsLastErrorsWhole: the dead-letter index shows
// each sink's last error as the overview does, whole and wrapped (it was
// cut by CSS at 38 characters, 22 on a phone, the rest only in a title
// that a phone cannot show), cut only past a few lines.
func TestDeadLetterIndexShowsLastErrorsWhole(t *testing.T) {
	db := memlog.New()
	t.Cleanup(func() { db.Close() })
	rows := sinkRows(t, db, []admin.SinkStatus{
		{Name: "archive", Plugin: "running"},
		{Name: "crm", Plugin: "running", Dead: 2, LastError: shortErr, LastErrorAt: time.Now()},
		{Name: "slack", Plugin: "running", Dead: 1, LastError: longErr, LastErrorAt: time.Now()},
		{Name: "db", Plugin: "running", Breaker: "open", LastError: hugeErr, LastErrorAt: time.Now()},
	}, "/ui/dlq", regexp.MustCompile(`<th scope="row"><a href="/ui/dlq/([^"]+)">`))
	lastErrorsWhole(t, rows)
	if !strings.Contains(rows["archive"], "<td>—</td>") {
		t.Errorf("archive, without a last error, shows:\n%s", rows["archive"])
	}
}

// TestOverviewDuringAnOutage: the overview says when a sink's next retry
// is due (from the log, as /v1/sinks does: crm's 503 with Retry-After:
// 3600 an hour ahead), offers "Retry now" only where it would do
// something (events waiting for a retry, or an open breaker), and shows
// a sink's last error whole, wrapped in its cell, unless it is longer
// than a few lines: then cut, saying how long it is, with the whole in
// the cell's title.
func TestOverviewDuringAnOutage(t *testing.T) {
	db := memlog.New()
	t.Cleanup(func() { db.Close() })
	if _, err := db.Append(context.Background(), []pipeline.Entry{{
		Event:   pipeline.Event{ID: "ev-1", Source: "callkaro", ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)},
		Targets: []pipeline.Target{{Sink: "crm", Route: "all"}},
	}}); err != nil {
		t.Fatal(err)
	}
	settleOne(t, db.Queue("crm"), pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "503 Service Unavailable"})
	rows := overviewRows(t, db, []admin.SinkStatus{
		{Name: "archive", Plugin: "running", Breaker: "closed", Ready: 4},
		{Name: "crm", Plugin: "running", Breaker: "closed", Retrying: 1, LastError: shortErr, LastErrorAt: time.Now()},
		{Name: "slack", Plugin: "running", Breaker: "closed", Retrying: 2, NextRetrySeconds: 40.2, LastError: longErr, LastErrorAt: time.Now()},
		{Name: "db", Plugin: "running", Breaker: "open", NextProbeSeconds: 30, LastError: hugeErr, LastErrorAt: time.Now()},
		{Name: "http", Plugin: "running", Breaker: "closed", Paused: true, Retrying: 1},
		{Name: "old", Plugin: admin.PluginRemoved, Retrying: 3},
		{Name: "tally", Plugin: "running", Rebuilding: true},
		{Name: "mail", Plugin: "running", Breaker: "closed", QueueError: "no quorum"},
	})
	nextRetry := regexp.MustCompile(`>next retry in ([^<]+)</div>`)
	for _, tt := range []struct {
		sink      string
		nextRetry string // "" none; a regexp of what it says
		retryNow  bool
	}{
		{"archive", "", false},   // healthy: nothing waits for a retry
		{"crm", `59m5\ds`, true}, // from the log: its retry an hour ahead
		{"slack", `^40s$`, true}, // as the daemon said
		{"db", "", true},         // an open breaker: probed at once
		{"http", "", true},       // paused: made due, for the resume
		{"old", "", false},       // removed: refused
		{"tally", "", false},     // rebuilding: not known yet
		{"mail", "", false},      // counts not known, breaker closed
	} {
		row := rows[tt.sink]
		m := nextRetry.FindStringSubmatch(row)
		switch {
		case tt.nextRetry == "" && m != nil:
			t.Errorf("%s: the overview says next retry in %s, want nothing:\n%s", tt.sink, m[1], row)
		case tt.nextRetry != "" && (m == nil || !regexp.MustCompile(tt.nextRetry).MatchString(m[1])):
			t.Errorf("%s: the overview says next retry %q, want in %s:\n%s", tt.sink, m, tt.nextRetry, row)
		}
		if got := strings.Contains(row, `action="/ui/sinks/`+tt.sink+`/retry-now"`); got != tt.retryNow {
			t.Errorf("%s: Retry now shown = %v, want %v:\n%s", tt.sink, got, tt.retryNow, row)
		}
	}

	lastErrorsWhole(t, rows)
}
