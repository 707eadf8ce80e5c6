package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
	"github.com/pipelined/pipelined/pipeline/eventlog/jetstreamlog"
)

// openLog opens the backend that [log] backend names. size reports the
// log's size on disk for the metrics, nil when the log is not local.
func openLog(ctx context.Context, c config.Log, log *slog.Logger) (l pipeline.Log, size func() map[string]int64, err error) {
	switch c.Backend {
	case "jetstream":
		o := jetstreamlog.Options{
			URLs: c.URLs, Stream: c.Stream, Replicas: c.Replicas,
			CredsFile: c.CredsFile, NKeyFile: c.NKeyFile,
			Logger: log, Retention: c.Retention.Duration, Name: "pipelined",
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
		db, err := badgerlog.Open(c.Dir, &badgerlog.Options{Logger: log, Retention: c.Retention.Duration, MemTableSize: int64(c.MemtableSize)})
		if err != nil {
			return nil, nil, err
		}
		return db, db.Sizes, nil
	}
}

// natsTLS builds the TLS settings of [log] tls_*; nil when none is set.
func natsTLS(c config.Log) (*tls.Config, error) {
	if c.TLSCAFile == "" && c.TLSCertFile == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("log.tls_ca_file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("log.tls_ca_file: %s holds no PEM certificate", c.TLSCAFile)
		}
	}
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("log.tls_cert_file, log.tls_key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
