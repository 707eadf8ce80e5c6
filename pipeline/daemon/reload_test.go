package daemon

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/stacks"
	"github.com/pipelined/pipelined/pipeline/config"
)

// reloadTOML is a configuration with one source and no sink, on loopback
// ports of the system's choice.
const reloadTOML = `
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[[source]]
name = "src"
path = "/hooks/src"
auth = { type = "none" }
`

// watchdogNotifier records what the daemon tells systemd, the watchdog's
// pings and reloads included, with a short watchdog interval.
type watchdogNotifier struct {
	recordingNotifier
	interval time.Duration
}

func (w *watchdogNotifier) Watchdog() error                 { return w.add("WATCHDOG") }
func (w *watchdogNotifier) Reloading() error                { return w.add("RELOADING") }
func (w *watchdogNotifier) WatchdogInterval() time.Duration { return w.interval }

// TestWatchdogDuringASlowReload: while a reload takes long (its read of the
// configuration is held here; in life, plugins that start slowly or a
// replaced sink's batch in flight), systemd's watchdog goes on hearing from
// the daemon, which is alive, instead of killing it halfway through the
// reload; a second reload waits for the first, and both are answered.
func TestWatchdogDuringASlowReload(t *testing.T) {
	nt := &watchdogNotifier{interval: 20 * time.Millisecond}
	var loads atomic.Int32
	entered := make(chan struct{}, 2)
	release := make(chan struct{})
	load := func() (*config.Config, error) {
		loads.Add(1)
		entered <- struct{}{}
		<-release
		return config.Parse("test.toml", []byte(reloadTOML))
	}
	d, _ := startDaemonWith(t, reloadTOML, Options{Notifier: nt, Load: load}, nil)
	unhold := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unhold) // before the daemon's stop, which waits for the reload
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	first, second := make(chan error, 1), make(chan error, 1)
	go func() { first <- d.Reload(ctx) }()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the reload did not start")
	}
	go func() { second <- d.Reload(ctx) }()
	pings := nt.count("WATCHDOG")
	for nt.count("WATCHDOG") < pings+3 {
		if ctx.Err() != nil {
			t.Fatalf("%d watchdog pings while the reload was held, want 3 or more: systemd would kill the daemon", nt.count("WATCHDOG")-pings)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := loads.Load(); n != 1 {
		t.Fatalf("%d reloads ran at once, want 1", n)
	}

	unhold()
	for i, c := range []chan error{first, second} {
		select {
		case err := <-c:
			if err != nil {
				t.Errorf("reload %d = %v", i+1, err)
			}
		case <-ctx.Done():
			t.Fatalf("reload %d got no answer", i+1)
		}
	}
	if n := loads.Load(); n != 2 {
		t.Errorf("%d reloads ran, want 2", n)
	}
	if n := nt.count("RELOADING"); n != 2 {
		t.Errorf("RELOADING sent %d times, want 2", n)
	}
	if n := nt.count("READY"); n != 3 {
		t.Errorf("READY sent %d times, want 3 (the start and each reload)", n)
	}
}

// TestReloadAskedDuringShutdownIsAnswered: a reload that waits behind a
// running one when shutdown begins, and one asked after, are answered
// (pipelined is shutting down) instead of hanging their admin request.
func TestReloadAskedDuringShutdownIsAnswered(t *testing.T) {
	entered := make(chan struct{}, 2)
	release := make(chan struct{})
	unhold := sync.OnceFunc(func() { close(release) })
	d, _, stop := startStoppable(t, reloadTOML, Options{Load: func() (*config.Config, error) {
		entered <- struct{}{}
		<-release
		return config.Parse("test.toml", []byte(reloadTOML))
	}}, nil)
	t.Cleanup(unhold) // before the daemon's stop, which waits for the reload
	first, second := make(chan error, 1), make(chan error, 1)
	go func() { _, err := d.reloadAndWait(context.Background()); first <- err }()
	<-entered // the first reload runs, held
	go func() { _, err := d.reloadAndWait(context.Background()); second <- err }()
	// The premise: the second reload waits in the queue before shutdown
	// begins. Until it does, it could still find the daemon stopped.
	stacks.WaitBlocked(t, "daemon.(*Daemon).reloadAndWait", 2)
	stopped := stop() // shutdown begins
	unhold()
	if err := <-first; err != nil {
		t.Logf("the running reload = %v", err)
	}
	select {
	case err := <-second:
		if !errors.Is(err, errShuttingDown) {
			t.Errorf("the reload asked during shutdown = %v, want %v", err, errShuttingDown)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reload asked during shutdown got no answer in 10s")
	}
	<-stopped
	if _, err := d.reloadAndWait(context.Background()); err == nil {
		t.Error("a reload after Run returned = nil, want an error")
	}
}
