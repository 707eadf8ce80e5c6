package jetstreamlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipelined/pipelined/pipeline"
)

// TestCheckFeatures: a stream that a server older than 2.12 created
// without atomic batches or message TTLs (it ignores both settings) is
// refused at start, naming the server's version and the one needed.
func TestCheckFeatures(t *testing.T) {
	info := func(atomic, ttl bool) *jetstream.StreamInfo {
		return &jetstream.StreamInfo{Config: jetstream.StreamConfig{Name: "PIPELINED", AllowAtomicPublish: atomic, AllowMsgTTL: ttl}}
	}
	if err := checkFeatures(info(true, true), "2.12.0"); err != nil {
		t.Errorf("checkFeatures(both) = %v, want nil", err)
	}
	for _, in := range []*jetstream.StreamInfo{info(false, false), info(true, false), info(false, true), nil} {
		err := checkFeatures(in, "2.9.10")
		if err == nil || !strings.Contains(err.Error(), "(version 2.9.10) is too old; pipelined needs nats-server 2.12 or newer") {
			t.Errorf("checkFeatures(%+v) = %v, want the version named", in, err)
		}
	}
}

// TestConnectHint: a refused connection says which setting to look at.
func TestConnectHint(t *testing.T) {
	for _, tt := range []struct {
		err  error
		o    Options
		want string
	}{
		{nats.ErrAuthorization, Options{NKeyFile: "/run/nkey"}, "[log] nkey_file"},
		{errors.New("nats: Authorization Violation"), Options{CredsFile: "/run/x.creds"}, "[log] creds_file"},
		{nats.ErrAuthorization, Options{}, "set [log] creds_file or nkey_file"},
		{errors.New("nats: tls error: connection closed by remote after TLS handshake: write: broken pipe"), Options{}, "set [log] tls_cert_file and tls_key_file"},
		{errors.New("nats: no servers available for connection"), Options{}, ""},
	} {
		got := connectHint(tt.err, tt.o)
		if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("connectHint(%v, %+v) = %q, want it to hold %q", tt.err, tt.o, got, tt.want)
		}
	}
}

// TestAppendedKeepsHealth: what an append finds out is what /readyz says
// until the next look at the stream: a failed append makes the log not
// ready, a later one that succeeds makes it ready again; neither the
// caller's leaving nor one event too big for a message says anything of
// the stream.
func TestAppendedKeepsHealth(t *testing.T) {
	l := &Log{}
	state := func() error {
		if h := l.health.Load(); h != nil {
			return h.err
		}
		return nil
	}
	ctx := context.Background()
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	l.appended(ctx, errors.New("no server took the batch"))
	if err := state(); err == nil || !strings.Contains(err.Error(), "the last append failed: no server took the batch") {
		t.Fatalf("after a failed append: %v, want the append's error", err)
	}
	l.appended(canceled, context.Canceled)
	l.appended(ctx, fmt.Errorf("one event: %w", pipeline.ErrTooBig))
	if state() == nil {
		t.Error("a canceled or too-big append cleared the failure, which says nothing of the stream")
	}
	l.appended(ctx, nil)
	if err := state(); err != nil {
		t.Errorf("after a successful append: %v, want ready", err)
	}
	l.appended(ctx, fmt.Errorf("one event: %w", pipeline.ErrTooBig))
	if err := state(); err != nil {
		t.Errorf("an event too big for a message made the log not ready: %v", err)
	}
}
