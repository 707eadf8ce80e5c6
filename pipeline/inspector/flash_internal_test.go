package inspector

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestFlashExpires: a flash cookie not shown within flashTTL is not shown
// at all (it would tell of an action long past as if just done), and its
// message is bounded.
func TestFlashExpires(t *testing.T) {
	u := New(Options{})
	rec := httptest.NewRecorder()
	start := time.Now()
	u.seeOther(rec, httptest.NewRequest(http.MethodPost, "/ui/dlq/crm", nil), session{value: "s"}, "/ui/dlq/crm", "Dropped 2 dead letter(s) of crm.")
	var v string
	for _, c := range rec.Result().Cookies() {
		if c.Name == flashCookie {
			v = c.Value
		}
	}
	if target, msg, ok := u.openFlash(v, "s", start); !ok || target != "/ui/dlq/crm" || msg != "Dropped 2 dead letter(s) of crm." {
		t.Fatalf("openFlash at once = %q, %q, %v; want the page and the message (the premise)", target, msg, ok)
	}
	if _, msg, ok := u.openFlash(v, "s", start.Add(flashTTL+time.Second)); ok {
		t.Errorf("openFlash after flashTTL = %q, valid; want expired", msg)
	}

	rec = httptest.NewRecorder()
	u.seeOther(rec, httptest.NewRequest(http.MethodPost, "/ui/", nil), session{value: "s"}, "/ui/", strings.Repeat("x", 10<<10))
	if c := rec.Result().Cookies(); len(c) != 1 || len(c[0].Value) > 2*maxFlash {
		t.Errorf("a flash of 10 KiB sets cookies %v, want one of at most %d bytes", c, 2*maxFlash)
	}
}
