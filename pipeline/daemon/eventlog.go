package daemon

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
	"github.com/pipelined/pipelined/pipeline/eventlog/jetstreamlog"
)

// openLog opens the backend that [log] backend names. size reports the
// log's size on disk for the metrics, nil when the log is not local.
// progress counts the badger backend's work as it opens.
func openLog(ctx context.Context, c config.Log, log *slog.Logger, progress *atomic.Int64) (l pipeline.Log, size func() map[string]int64, err error) {
	switch c.Backend {
	case "jetstream":
		o := jetstreamlog.Options{
			URLs: c.URLs, Stream: c.Stream, Replicas: c.Replicas,
			Logger: log, Retention: c.Retention.Duration, Name: "pipelined",
		}
		if o.CredsFile, o.NKeyFile, err = natsCredentials(c); err != nil {
			return nil, nil, err
		}
		if o.TLS, err = natsTLS(c); err != nil {
			return nil, nil, err
		}
		octx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		js, err := jetstreamlog.Open(octx, o)
		if err != nil {
			return nil, nil, err
		}
		return js, nil, nil
	default:
		db, err := badgerlog.Open(c.Dir, &badgerlog.Options{Logger: log, Retention: c.Retention.Duration, MemTableSize: int64(c.MemtableSize), Progress: progress})
		if err != nil {
			return nil, nil, err
		}
		return db, db.Sizes, nil
	}
}

// logInUse returns an error when another process has the log of c open:
// a Badger directory is one process's (see [badgerlog.InUse]); a JetStream
// stream is shared by design.
func logInUse(c config.Log) error {
	if c.Backend == "jetstream" {
		return nil
	}
	return badgerlog.InUse(c.Dir)
}

// natsCredentials returns the files of [log] creds_file and nkey_file
// with their ${VAR}s expanded, as for every *_file.
func natsCredentials(c config.Log) (creds, nkey string, err error) {
	if c.CredsFile != "" {
		if creds, err = config.ExpandFile(c.CredsFile); err != nil {
			return "", "", fmt.Errorf("log.creds_file %w", err)
		}
	}
	if c.NKeyFile != "" {
		if nkey, err = config.ExpandFile(c.NKeyFile); err != nil {
			return "", "", fmt.Errorf("log.nkey_file %w", err)
		}
	}
	return creds, nkey, nil
}

// natsTLS builds the TLS settings of [log] tls_*; nil when none is set.
func natsTLS(c config.Log) (*tls.Config, error) {
	return clientTLS("log", c.TLSCAFile, c.TLSCertFile, c.TLSKeyFile, "give the CA certificate(s) that sign the NATS servers'")
}

// openTick is how often a long open of the log is reported.
const openTick = 5 * time.Second

// reportOpening reports an open of the log that takes longer than
// d.openTick, every d.openTick until the stop it returns is called: a line
// in the log and systemd's status, and, while progress (counted by the log
// as it replays its write-ahead log and rebuilds the sinks' queues) moves,
// a request to systemd for three ticks more (EXTEND_TIMEOUT_USEC), so that
// TimeoutStartSec= does not kill a daemon rebuilding a day's backlog. An
// open that stops making progress gets no more time: systemd's timeout
// stops a stuck start, as it should. stop reports whether more time was
// asked for.
func (d *Daemon) reportOpening(c config.Log, progress *atomic.Int64) (stop func() (extended bool)) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	var extended bool
	go func() {
		defer close(stopped)
		t := time.NewTicker(d.openTick)
		defer t.Stop()
		start, last := time.Now(), int64(0)
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			n := progress.Load()
			took := time.Since(start).Round(time.Second)
			if c.Backend == "jetstream" { // counts no progress; bounded by its own timeout
				d.log.Info("opening the event log: connecting to NATS", "urls", c.URLs, "took", took)
				continue
			}
			switch {
			case n == 0: // Badger opening its own files, which counts nothing
				d.log.Info("opening the event log", "dir", c.Dir, "took", took)
				continue
			case n == last:
				d.log.Warn("opening the event log: no progress since the last report; systemd's start timeout is not extended", "dir", c.Dir, "took", took, "progress", n)
				continue
			}
			last = n
			d.log.Info("opening the event log: replaying its write-ahead log", "dir", c.Dir, "took", took, "progress", n)
			extended = true
			d.notify(func(nt Notifier) error { return nt.ExtendTimeout(3 * d.openTick) })
			d.notify(func(nt Notifier) error {
				return nt.Status(fmt.Sprintf("opening the event log in %s: %v, %d records replayed", c.Dir, took, n))
			})
		}
	}()
	return func() bool { close(done); <-stopped; return extended }
}
