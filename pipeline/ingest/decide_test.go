package ingest_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/pipelined/pipelined/pipeline/auth"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/metrics"
)

// TestDecide runs each step of Config.Decide on its own: the status,
// outcome and reason of each refusal, whether the audit keeps it, and
// that the rate limit (Admit) is asked only of authenticated requests.
func TestDecide(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxBody = 64
	v, err := auth.New(auth.Spec{Type: "bearer", Secrets: [][]byte{[]byte("s3cret")}})
	if err != nil {
		t.Fatal(err)
	}
	src := cfg.Sources[0]
	src.Verifier = v
	src.KeepRejected = time.Hour
	good := `{"data": {"callSid": "ck-1"}}`
	// What net/http's body reader returns when the connection's read
	// deadline (read_timeout) passes, or the peer resets it.
	conn := func(err error) error {
		return &net.OpError{Op: "read", Net: "tcp", Source: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080},
			Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, Err: err}
	}
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

	tests := []struct {
		name        string
		contentType string
		token       string
		body        io.Reader
		length      int64 // -1: unknown
		admitWait   time.Duration
		status      int
		outcome     string
		reason      string // a part of Error
		kept        bool   // the audit keeps it
		admitted    bool   // Admit was asked
	}{
		{"accepted", "application/json", "s3cret", strings.NewReader(good), -1, 0, 200, "", "", false, true},
		{"not JSON by content type", "text/plain", "s3cret", strings.NewReader(good), -1, 0, 415, metrics.OutcomeUnsupportedMediaType, `content type "text/plain" is not JSON`, true, false},
		{"declared too large", "application/json", "s3cret", strings.NewReader(good), 65, 0, 413, metrics.OutcomeTooLarge, "body of 65 bytes is larger than the limit of 64 bytes", true, false},
		{"too large", "application/json", "s3cret", strings.NewReader(strings.Repeat(" ", 65)), -1, 0, 413, metrics.OutcomeTooLarge, "body is larger than the limit of 64 bytes", true, false},
		{"unreadable", "application/json", "s3cret", iotest.ErrReader(io.ErrUnexpectedEOF), -1, 0, 400, metrics.OutcomeReadError, "read body: unexpected EOF", false, false},
		{"read timed out", "application/json", "s3cret", iotest.ErrReader(conn(os.ErrDeadlineExceeded)), -1, 0, 408, metrics.OutcomeReadError, "request body not received in time", false, false},
		{"connection reset", "application/json", "s3cret", iotest.ErrReader(conn(os.NewSyscallError("read", syscall.ECONNRESET))), -1, 0, 400, metrics.OutcomeReadError, "read body: read: connection reset by peer", false, false},
		{"wrong token", "application/json", "guess", strings.NewReader(good), -1, 0, 401, metrics.OutcomeUnauthorized, "", true, false},
		{"over the rate", "application/json", "s3cret", strings.NewReader(good), -1, 2 * time.Second, 429, metrics.OutcomeRateLimited, "is over its rate", false, true},
		{"bad JSON", "application/json", "s3cret", strings.NewReader(`{"a":`), -1, 0, 400, metrics.OutcomeBadJSON, "body is not valid JSON", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			admitted := false
			req := ingest.Request{
				Header:        http.Header{"Content-Type": {tt.contentType}, "Authorization": {"Bearer " + tt.token}},
				Body:          tt.body,
				ContentLength: tt.length,
				ReceivedAt:    at,
				ID:            "id-1",
				Admit:         func() time.Duration { admitted = true; return tt.admitWait },
			}
			d := cfg.Decide(&src, req)
			if d.Status != tt.status || d.Outcome != tt.outcome || !strings.Contains(d.Error, tt.reason) {
				t.Fatalf("Decide = %d %q %q, want %d %q containing %q", d.Status, d.Outcome, d.Error, tt.status, tt.outcome, tt.reason)
			}
			if strings.Contains(d.Error, "127.0.0.1") {
				t.Errorf("Decide(%s).Error = %q, quotes an address", tt.name, d.Error)
			}
			if got := d.Rejection != nil; got != tt.kept {
				t.Errorf("Decide(%s).Rejection = %+v, want kept %v", tt.name, d.Rejection, tt.kept)
			}
			if d.Rejection != nil && (d.Rejection.Status != d.Status || d.Rejection.Reason != d.Error || d.Rejection.Headers["authorization"] != "") {
				t.Errorf("Decide(%s).Rejection = %+v, want status %d, reason %q and no credentials", tt.name, d.Rejection, d.Status, d.Error)
			}
			if admitted != tt.admitted {
				t.Errorf("Decide(%s) asked Admit: %v, want %v", tt.name, admitted, tt.admitted)
			}
			if tt.status == http.StatusTooManyRequests && d.RetryAfter != tt.admitWait {
				t.Errorf("Decide(%s).RetryAfter = %v, want %v", tt.name, d.RetryAfter, tt.admitWait)
			}
			if !d.Accepted() {
				return
			}
			e := d.Entry
			if e.Event.ID != "id-1" || !e.Event.ReceivedAt.Equal(at) || e.DedupKey != "ck-1" || !bytes.Equal(e.Event.Body, []byte(good)) || e.Event.Auth != "bearer" {
				t.Errorf("Decide(%s).Entry = %+v, want id-1 at %v, dedup key ck-1, the body as sent, auth bearer", tt.name, e, at)
			}
			if _, ok := e.Event.Headers["authorization"]; ok {
				t.Errorf("Decide(%s) stored the Authorization header", tt.name)
			}
			if len(e.Targets) == 0 || len(d.RouteErrs) == 0 {
				t.Errorf("Decide(%s) = targets %v, route errors %v; want the archive and the broken route's error", tt.name, e.Targets, d.RouteErrs)
			}
		})
	}
}
