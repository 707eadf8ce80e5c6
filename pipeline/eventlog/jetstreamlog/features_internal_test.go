package jetstreamlog

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
