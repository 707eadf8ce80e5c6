package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// serve runs h on 127.0.0.1:0 and returns its URL.
func serve(t *testing.T, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/"
}

func testConfig(t *testing.T, url string) config {
	tpl, err := newBodyTemplate(defaultPayload)
	if err != nil {
		t.Fatal(err)
	}
	return config{URL: url, Conns: 4, Duration: time.Second, Warmup: 100 * time.Millisecond, Body: tpl}
}

func TestRunAgainstBare(t *testing.T) {
	url := serve(t, newBareServer())
	rep, err := run(context.Background(), testConfig(t, url))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Errors != 0 || rep.Requests == 0 || rep.Latency.Count == 0 || rep.RequestsPerSec <= 0 || rep.Sent < rep.Requests {
		t.Fatalf("report %+v: want no errors and counts > 0", rep)
	}
	if rep.Latency.P50 <= 0 || rep.Latency.P50 > rep.Latency.P99 || rep.Latency.P99 > rep.Latency.Max {
		t.Fatalf("latencies out of order: %+v", rep.Latency)
	}
	// The generator's own cost: some CPU per request (a request cannot
	// cost less than a microsecond, nor a second), switches not negative.
	g := rep.Generator
	if g == nil || g.CPUPerRequestUS < 1 || g.CPUPerRequestUS > 1e6 || g.CPUS <= 0 ||
		g.VoluntarySwitchesPerRequest < 0 || g.InvoluntarySwitchesPerRequest < 0 {
		t.Fatalf("generator cost %+v: want CPU > 0 per request", g)
	}
	var out bytes.Buffer
	printReport(&out, rep)
	if !strings.Contains(out.String(), "µs CPU per request sent") {
		t.Errorf("text report lacks the generator's cost:\n%s", out.String())
	}
}

func TestOpenLoopAgainstBare(t *testing.T) {
	url := serve(t, newBareServer())
	cfg := testConfig(t, url)
	cfg.Rate, cfg.Duration, cfg.Warmup = 400, 500*time.Millisecond, 0
	rep, err := run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "open" || rep.Errors != 0 || rep.Sent+rep.Unsent != 200 || rep.Requests == 0 || rep.SendLag == nil {
		t.Fatalf("report %+v: want 200 scheduled, no errors", rep)
	}
}

// dedupServer answers like the daemon: duplicate is true for a callSid seen
// before. It checks the request as the daemon would.
func dedupServer(t *testing.T) http.Handler {
	var mu sync.Mutex
	seen := map[string]bool{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Data struct {
				CallSid string `json:"callSid"`
			} `json:"data"`
		}
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" ||
			json.Unmarshal(b, &body) != nil || body.Data.CallSid == "" || r.ProtoMajor != 1 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		dup := seen[body.Data.CallSid]
		seen[body.Data.CallSid] = true
		mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"id": "e-" + body.Data.CallSid, "duplicate": dup})
	})
}

func TestDupAgainstDedupingServer(t *testing.T) {
	url := serve(t, &http.Server{Handler: dedupServer(t)})
	cfg := testConfig(t, url)
	cfg.Duration, cfg.Dup = 300*time.Millisecond, 0.3
	rep, err := run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Errors != 0 || rep.DuplicatesSent == 0 || rep.Requests == 0 {
		t.Fatalf("report %+v: want duplicates sent and all answered as expected", rep)
	}
	// Against the bare handler (which never dedups), duplicates are mismatches.
	url = serve(t, newBareServer())
	cfg.URL = url
	rep, _ = run(context.Background(), cfg)
	if rep.ErrorKinds["duplicate mismatch"] == 0 || rep.ErrorKinds["duplicate mismatch"] != rep.DuplicatesSent {
		t.Fatalf("report %+v: want every duplicate counted as a mismatch", rep)
	}
}

func TestFailuresAreCountedAndExitNonZero(t *testing.T) {
	url := serve(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch r.URL.Query().Get("kind") {
		case "503":
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case "noid":
			w.Write([]byte(`{"duplicate":false}`))
		default:
			w.Write([]byte(`{"id":"x","duplicate":false}`))
		}
	})})
	for _, tc := range []struct{ query, kind string }{{"?kind=503", "status 503"}, {"?kind=noid", "bad body"}} {
		var out, errOut bytes.Buffer
		code := mainErr([]string{"run", "-url", url + tc.query, "-c", "2", "-d", "200ms", "-warmup", "0s", "-json"}, &out, &errOut)
		var rep Report
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("-json output is not JSON: %v\n%s", err, out.String())
		}
		if code != 1 || rep.Errors == 0 || rep.ErrorKinds[tc.kind] != rep.Errors || !strings.Contains(errOut.String(), "FAILED") {
			t.Errorf("%s: exit %d, report %+v, stderr %s; want exit 1 and only %q errors", tc.query, code, rep, errOut.String(), tc.kind)
		}
	}
	// Nothing listening: transport errors.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String() + "/"
	ln.Close()
	var out, errOut bytes.Buffer
	if code := mainErr([]string{"run", "-url", dead, "-c", "1", "-d", "100ms", "-warmup", "0s"}, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "transport: connection refused") {
		t.Errorf("dead URL: exit %d, stderr %s", code, errOut.String())
	}
	// A good run exits 0 and prints the table.
	out.Reset()
	if code := mainErr([]string{"run", "-url", url, "-c", "2", "-d", "200ms", "-warmup", "0s"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "requests/s") {
		t.Errorf("good run: exit %d, output %s", code, out.String())
	}
}

func TestCPUProfileIsWritten(t *testing.T) {
	url := serve(t, newBareServer())
	prof := t.TempDir() + "/load.pprof"
	var out, errOut bytes.Buffer
	code := mainErr([]string{"run", "-url", url, "-c", "2", "-d", "300ms", "-warmup", "0s", "-json", "-cpuprofile", prof}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, errOut.String())
	}
	b, err := os.ReadFile(prof)
	// A CPU profile is gzipped protobuf: it starts with gzip's magic.
	if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("profile %s: %v, %d bytes, want a gzipped profile", prof, err, len(b))
	}
	if code := mainErr([]string{"run", "-url", url, "-cpuprofile", t.TempDir() + "/no/such/dir/p"}, &out, &errOut); code != 2 {
		t.Errorf("unwritable -cpuprofile: exit %d, want 2", code)
	}
}
