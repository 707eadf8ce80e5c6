package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// The bounds of a stop on a log that cannot commit: [server]
// shutdown_timeout as this test sets it, then what package daemon adds
// (writerGrace, answerWait, logCloseTimeout).
const (
	stallShutdownTimeout = 2 * time.Second
	stallWriterGrace     = time.Second
	stallAnswerWait      = time.Second
	stallLogClose        = 10 * time.Second
)

// TestJetStreamClusterStopWhileTheClusterStalls stops pipelined (SIGTERM)
// while every server of its JetStream cluster is stopped (SIGSTOP: the
// connection stays up, nothing answers, as in a partition or a cluster
// that lost its quorum) and three webhooks wait for their commit. The stop
// is bounded: pipelined exits 75 (EX_TEMPFAIL, a stop systemd records as
// failed) within shutdown_timeout and the bounds that follow it, where it
// used to wait for each append's and the connection's own timeouts and
// exit 0; the three requests are answered 503 with Retry-After, never
// 2xx; one ERROR line says what the stop gave up on and why nothing
// acknowledged is lost. Once the cluster runs again, a new daemon delivers
// every event acknowledged before the stall.
func TestJetStreamClusterStopWhileTheClusterStalls(t *testing.T) {
	needCluster(t)
	nodes := startCluster(t)
	conf := strings.Replace(jetstreamConfig(nodes, "STALL", 3), `max_body = "64KiB"`,
		fmt.Sprintf("max_body = \"64KiB\"\nshutdown_timeout = %q", stallShutdownTimeout.String()), 1)
	ds, dirs := startDaemons(t, 1, conf)
	d := ds[0]

	var acked []string
	for n := range 3 {
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(fmt.Sprintf("stall-acked-%d", n), "interested"))
		if err != nil || code != http.StatusOK {
			t.Fatalf("POST before the stall = %d %v %v", code, ans, err)
		}
		acked = append(acked, ans["id"].(string))
	}

	for _, n := range nodes {
		if err := n.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { // before startCluster's kill: a stopped process takes SIGKILL too, but go on cleanly
		for _, n := range nodes {
			n.cmd.Process.Signal(syscall.SIGCONT)
		}
	})

	type answer struct {
		code       int
		retryAfter string
		body       string
		err        error
	}
	const waiting = 3
	answers := make(chan answer, waiting)
	client := &http.Client{Timeout: 60 * time.Second}
	for n := range waiting {
		go func() {
			resp, err := client.Post(d.URL+"/hooks/callkaro", "application/json",
				bytes.NewReader(harness.CallEvent(fmt.Sprintf("stall-waiting-%d", n), "interested")))
			if err != nil {
				answers <- answer{err: err}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			answers <- answer{resp.StatusCode, resp.Header.Get("Retry-After"), string(b), nil}
		}()
	}
	// The premise: the writer is held in an append to the stalled
	// cluster (only the posts append), so /readyz says it does not
	// answer a ping.
	harness.Eventually(t, 10*time.Second, func() error {
		resp, err := harness.Client.Get(d.AdminURL + "/readyz?verbose")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), "the writer did not answer a ping") {
			return fmt.Errorf("GET /readyz = %d %s, want the writer held", resp.StatusCode, b)
		}
		return nil
	})

	t0 := time.Now()
	d.Signal(syscall.SIGTERM)
	select {
	case <-d.Exited():
	case <-time.After(90 * time.Second):
		t.Fatal("pipelined still runs 90s after SIGTERM")
	}
	took := time.Since(t0)
	t.Logf("pipelined exited %d, %v after SIGTERM", d.ExitCode(), took)
	bound := stallShutdownTimeout + stallWriterGrace + stallAnswerWait + stallLogClose
	if took > bound+3*time.Second {
		t.Errorf("pipelined exited %v after SIGTERM, want at most about %v (shutdown_timeout %v, then the writer's grace, the answers' wait and the log's close timeout)",
			took, bound, stallShutdownTimeout)
	}
	if code := d.ExitCode(); code != 75 {
		t.Errorf("pipelined exited %d after a stop that gave up on the log, want 75 (EX_TEMPFAIL)", code)
	}
	for range waiting {
		select {
		case a := <-answers:
			if a.err != nil || a.code != http.StatusServiceUnavailable || a.retryAfter == "" {
				t.Errorf("POST while the cluster stalled = %d (Retry-After %q) %s %v, want 503 with Retry-After", a.code, a.retryAfter, a.body, a.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a request waiting for the stalled cluster got no answer")
		}
	}
	gave := logRecords(t, d, "stop gave up on the event log, which did not commit or close in time: nothing acknowledged is lost")
	if len(gave) != 1 {
		t.Fatalf("%d lines saying what the stop gave up on, want 1:\n%s", len(gave), d.Log())
	}
	if r := gave[0]; r["level"] != "ERROR" || r["backend"] != "jetstream" || !strings.Contains(r["gave_up_on"].(string), "appends") ||
		!strings.Contains(r["msg"].(string), "stored by the stream's replicas") {
		t.Errorf("log record %v: want ERROR, backend jetstream, gave_up_on with appends, and why nothing acknowledged is lost", r)
	}
	if got := logRecords(t, d, "pipelined stopped, not cleanly"); len(got) != 1 || got[0]["exit_status"] != 75.0 {
		t.Errorf("last lines %v, want one \"pipelined stopped, not cleanly\" with exit_status 75", got)
	}

	// The cluster runs again: a new daemon delivers what was acknowledged.
	for _, n := range nodes {
		n.cmd.Process.Signal(syscall.SIGCONT)
	}
	for _, n := range nodes {
		waitJetStream(t, n.url(), 60*time.Second)
	}
	harness.Start(t, harness.WriteConfig(t, dirs[0], conf))
	waitDelivered(t, dirs, acked, 60*time.Second)
}
