package jetstreamlog_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/jetstreamlog"
	"github.com/pipelined/pipelined/pipeline/eventlog/logtest"
)

// runServer starts an in-process nats-server with JetStream in a temporary
// directory and stops it when t ends.
func runServer(t testing.TB) string {
	t.Helper()
	return startServer(t).ClientURL()
}

// startServer is runServer that returns the server itself.
func startServer(t testing.TB) *server.Server {
	t.Helper()
	s := startServerWith(t, &server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	})
	t.Cleanup(s.Shutdown)
	return s
}

// startServerWith starts an in-process nats-server with opts; stopping it
// is the caller's.
func startServerWith(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	if opts.Port == -1 {
		opts.Port = testPort(t)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("server.NewServer: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready within 10s")
	}
	return s
}

var streams atomic.Int64

// nextPort is the last port testPort handed out.
var nextPort atomic.Int64

// testPort is the port a test server listens on: -1 (the system picks
// one), or, when PIPELINED_TEST_NATS_PORTS is a range "first-last" (a
// machine shared by people who each have one), the next port of the
// range that is free.
func testPort(t testing.TB) int {
	t.Helper()
	r := os.Getenv("PIPELINED_TEST_NATS_PORTS")
	if r == "" {
		return -1
	}
	a, b, _ := strings.Cut(r, "-")
	first, err1 := strconv.Atoi(a)
	last, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || first < 1 || last < first {
		t.Fatalf("PIPELINED_TEST_NATS_PORTS=%q: want a range of ports such as 18200-18299", r)
	}
	nextPort.CompareAndSwap(0, int64(first-1))
	for range last - first + 1 {
		p := int(nextPort.Add(1))
		if p > last {
			p = first + (p-first)%(last-first+1)
		}
		if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p))); err == nil {
			ln.Close()
			return p
		}
	}
	t.Fatalf("PIPELINED_TEST_NATS_PORTS=%q: no port of the range is free", r)
	return 0
}

func open(t testing.TB, url, stream string) *jetstreamlog.Log {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := jetstreamlog.Open(ctx, jetstreamlog.Options{URLs: []string{url}, Stream: stream})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

func TestLog(t *testing.T) {
	url := runServer(t)
	// A replayed entry joins the end of the queue (docs/jetstream.md).
	logtest.RunWith(t, func(t *testing.T) pipeline.Log {
		return open(t, url, fmt.Sprintf("T%d", streams.Add(1)))
	}, logtest.Options{RequeueMayFollow: true, DropAllUnmarked: true})
}

func TestLogDurable(t *testing.T) {
	url := runServer(t)
	var (
		mu    sync.Mutex
		names = map[string]string{}
	)
	logtest.RunDurable(t, func(t *testing.T, dir string) pipeline.Log {
		mu.Lock()
		name, ok := names[dir]
		if !ok {
			name = fmt.Sprintf("D%d", streams.Add(1))
			names[dir] = name
		}
		mu.Unlock()
		return open(t, url, name)
	})
}

// TestCheckWrite: /readyz's question (pipeline.WriteChecker) follows the
// NATS server: nil while it serves, an error naming the lost connection
// while it is down, and nil again once it is back, with no append needed.
func TestCheckWrite(t *testing.T) {
	dir := t.TempDir()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true}
	s := startServerWith(t, opts)
	t.Cleanup(func() { s.Shutdown() })       // the server of the end, after the log's Close
	opts.Port = s.Addr().(*net.TCPAddr).Port // the same address again after the restart
	l := open(t, s.ClientURL(), fmt.Sprintf("CW%d", streams.Add(1)))
	t.Cleanup(func() { l.Close() })
	waitFor := func(what string, ok func(error) bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := l.CheckWrite()
			if ok(err) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("CheckWrite = %v after 20s, want %s", err, what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("nil while the server serves", func(err error) bool { return err == nil })
	s.Shutdown()
	waitFor("an error naming the lost connection", func(err error) bool {
		return err != nil && strings.Contains(err.Error(), "not connected to NATS")
	})
	s = startServerWith(t, opts)
	waitFor("nil once the server is back", func(err error) bool { return err == nil })
	if _, err := l.Append(context.Background(), []pipeline.Entry{{Event: pipeline.Event{ID: "after", Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)}}}); err != nil {
		t.Errorf("Append once CheckWrite is nil again = %v", err)
	}
}
