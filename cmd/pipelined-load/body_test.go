package main

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
)

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("rendered body is not valid JSON: %v\n%s", err, b)
	}
	return m
}

func TestBodyTemplate(t *testing.T) {
	tests := []struct {
		name, payload, orig string
	}{
		{"embedded call_ended", string(defaultPayload), "2303fa770b666a64ab1694c1e"},
		{"compact, callSid last", `{"event":"x","data":{"a":[1,{"callSid":"no"}],"callSid":"abc"}}`, "abc"},
		{"decoys before data", `{"callSid":"top","x":{"data":{"callSid":"deep"}},"data" : { "callSid" :  "real\"q" , "n": 1 }}`, `real"q`},
		{"data not first", "{\n\t\"v\": 2,\n\t\"data\": {\"callSid\": \"\"}\n}", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tpl, err := newBodyTemplate([]byte(tc.payload))
			if err != nil {
				t.Fatal(err)
			}
			if tpl.orig != tc.orig {
				t.Errorf("original callSid %q, want %q", tpl.orig, tc.orig)
			}
			want := decode(t, []byte(tc.payload))
			got := decode(t, tpl.render(nil, []byte("0123abcd-7-zz")))
			if sid := got["data"].(map[string]any)["callSid"]; sid != "0123abcd-7-zz" {
				t.Errorf("callSid = %v, want the rendered id", sid)
			}
			got["data"].(map[string]any)["callSid"] = tc.orig
			if !reflect.DeepEqual(got, want) {
				t.Errorf("rendered body differs from the payload beyond callSid:\n%v\n%v", got, want)
			}
			// Rendering the original id gives back the payload byte for byte
			// (when it needs no escaping).
			if !strings.Contains(tc.orig, `"`) {
				if b := tpl.render(nil, []byte(tc.orig)); string(b) != tc.payload {
					t.Errorf("render(orig) = %s, want the payload", b)
				}
			}
		})
	}
}

func TestBodyTemplateRejects(t *testing.T) {
	for _, p := range []string{``, `[1]`, `{"data":1}`, `{"data":{"callSid":5}}`, `{"data":{"other":"x"}}`, `{"callSid":"x"}`, `{"data":{"callSid":"x"}`} {
		if _, err := newBodyTemplate([]byte(p)); err == nil {
			t.Errorf("newBodyTemplate(%q) accepted it", p)
		}
	}
}

func TestEmbeddedPayloadIsTheSharedOne(t *testing.T) {
	// The copy must be the CallKaro payload the rest of the project tests with.
	if m := decode(t, defaultPayload); m["event"] != "call_ended" {
		t.Fatalf("embedded payload event = %v", m["event"])
	}
	if b, err := os.ReadFile("testdata/call_ended.json"); err != nil || string(b) != string(defaultPayload) {
		t.Fatalf("embedded payload differs from testdata/call_ended.json: %v", err)
	}
}

func TestUniqueSids(t *testing.T) {
	s := &schedule{}
	tpl, err := newBodyTemplate(defaultPayload)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config{Body: tpl}
	seen := map[string]bool{}
	for wi := range 3 {
		w := &worker{cfg: cfg, s: s, idPre: []byte("00ff00ff00ff00ff-" + string(rune('0'+wi)) + "-")}
		for range 5000 {
			sid, dup := w.nextSid()
			if dup {
				t.Fatal("dup without -dup")
			}
			body := decode(t, tpl.render(nil, sid))
			got := body["data"].(map[string]any)["callSid"].(string)
			if got != string(sid) || seen[got] {
				t.Fatalf("callSid %q rendered as %q, or seen before", sid, got)
			}
			seen[got] = true
		}
	}
}
