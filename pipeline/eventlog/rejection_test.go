package eventlog_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline/eventlog"
)

func TestRejectionID(t *testing.T) {
	at := time.Unix(0, 0x0123456789abcdef)
	id := eventlog.RejectionID("callkaro", at, 7)
	if want := "callkaro/0123456789abcdef0000000000000007"; id != want {
		t.Errorf("RejectionID(callkaro, %d ns, 7) = %q, want %q", at.UnixNano(), id, want)
	}
	src, suffix, ok := eventlog.ParseRejectionID(id)
	if !ok || src != "callkaro" || !bytes.Equal(suffix, eventlog.RejectionSuffix(at, 7)) {
		t.Errorf("ParseRejectionID(%q) = %q, %x, %v, want callkaro, %x, true", id, src, suffix, ok, eventlog.RejectionSuffix(at, 7))
	}
	later := eventlog.RejectionID("callkaro", at.Add(time.Nanosecond), 0)
	if later <= id {
		t.Errorf("RejectionID one nanosecond later = %q, want it to sort after %q", later, id)
	}

	for _, bad := range []string{
		"",
		"callkaro",
		"callkaro/0123456789abcdef000000000000000",   // 31 digits
		"callkaro/0123456789abcdef00000000000000077", // 33 digits
		"callkaro/0123456789ABCDEF0000000000000007",  // upper case
		"callkaro/0123456789abcdef000000000000000g",
	} {
		t.Run(bad, func(t *testing.T) {
			if _, _, ok := eventlog.ParseRejectionID(bad); ok {
				t.Errorf("ParseRejectionID(%q) ok = true, want false", bad)
			}
		})
	}
}
