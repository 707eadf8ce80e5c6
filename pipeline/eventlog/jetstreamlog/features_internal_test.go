package jetstreamlog

import (
	"strings"
	"testing"

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
