package jetstreamlog_test

import (
	"context"
	"fmt"
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
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("server.NewServer: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready within 10s")
	}
	t.Cleanup(s.Shutdown)
	return s
}

var streams atomic.Int64

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
	}, logtest.Options{RequeueMayFollow: true})
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
