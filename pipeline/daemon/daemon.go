// Package daemon wires the parts of pipelined together: config → event log →
// writer → ingest and admin listeners → one dispatcher and one plugin per
// sink. [Daemon.Run] runs them until its context ends, then shuts down in the
// order that loses nothing: stop accepting, answer in-flight requests, flush
// the writer, finish in-flight deliveries, stop plugins, close the log.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/auth"
	"github.com/pipelined/pipelined/pipeline/badgerlog"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/pluginhost"
	"github.com/pipelined/pipelined/pipeline/rules"
	"github.com/pipelined/pipelined/pipeline/writer"
	"golang.org/x/time/rate"
)

// Options configures a [Daemon].
type Options struct {
	// Logger receives everything the daemon logs. Default: discard.
	Logger *slog.Logger
	// OnReady, if set, is called once the daemon serves: the log is open,
	// every plugin answered and both listeners are bound.
	OnReady func(ingestAddr, adminAddr net.Addr)
}

// Daemon is one running pipelined.
type Daemon struct {
	cfg *config.Config
	o   Options
	log *slog.Logger

	ready atomic.Bool
	sinks []*sink
	cert  atomic.Pointer[certificate] // nil without TLS
}

// ReloadTLS reads the ingest listener's certificate and key again (SIGHUP).
func (d *Daemon) ReloadTLS() {
	if c := d.cert.Load(); c != nil {
		c.Reload()
	}
}

type sink struct {
	name string
	sup  *pluginhost.Supervisor
	q    pipeline.Queue
}

// New returns a daemon for cfg, which must have passed Validate.
func New(cfg *config.Config, o *Options) *Daemon {
	var opts Options
	if o != nil {
		opts = *o
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Daemon{cfg: cfg, o: opts, log: opts.Logger}
}

// Compile builds what ingest serves from cfg: sources with their dedup
// programs and the router.
func Compile(cfg *config.Config) (ingest.Config, error) {
	ic := ingest.Config{MaxBody: int64(cfg.Server.MaxBody), MaxConcurrent: cfg.Server.MaxConcurrent}
	var errs []error
	var err error
	if ic.TrustedProxies, err = config.ParsePrefixes(cfg.Server.TrustedProxies); err != nil {
		errs = append(errs, fmt.Errorf("server.trusted_proxies: %w", err))
	}
	for i, s := range cfg.Sources {
		src := ingest.Source{Name: s.Name, Path: s.Path, DedupWindow: s.DedupWindow.Duration}
		spec, err := cfg.AuthSpec(i)
		if err == nil {
			src.Verifier, err = auth.New(spec)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("source %q: auth: %w", s.Name, err))
		}
		if s.Rate.PerSecond > 0 {
			burst := s.Burst
			if burst == 0 {
				burst = max(1, int(math.Ceil(s.Rate.PerSecond)))
			}
			src.Limiter = rate.NewLimiter(rate.Limit(s.Rate.PerSecond), burst)
		}
		if src.Allow, err = config.ParsePrefixes(s.AllowCIDRs); err != nil {
			errs = append(errs, fmt.Errorf("source %q: allow_cidrs: %w", s.Name, err))
		}
		if s.DedupKey == "" {
			src.DedupHeader = auth.DedupHeader(spec)
		}
		if s.DedupKey != "" {
			p, err := rules.CompileValue(s.DedupKey)
			if err != nil {
				errs = append(errs, fmt.Errorf("source %q: dedup_key: %w", s.Name, err))
			}
			src.DedupKey = p
		}
		ic.Sources = append(ic.Sources, src)
	}
	routes := make([]rules.Route, len(cfg.Routes))
	for i, r := range cfg.Routes {
		routes[i] = rules.Route{Name: r.Name, When: r.When, Transform: r.Transform, To: r.To}
	}
	router, err := rules.NewRouter(routes)
	if err != nil {
		errs = append(errs, err)
	}
	ic.Router = router
	return ic, errors.Join(errs...)
}

// PluginSpecs returns how to start each sink's plugin.
func PluginSpecs(cfg *config.Config) ([]pluginhost.Spec, error) {
	specs := make([]pluginhost.Spec, len(cfg.Sinks))
	for i, s := range cfg.Sinks {
		raw, err := cfg.SinkConfigJSON(i)
		if err != nil {
			return nil, fmt.Errorf("sink %q: config: %w", s.Name, err)
		}
		specs[i] = pluginhost.Spec{Sink: s.Name, Plugin: s.Plugin, Command: s.Command, Dirs: cfg.Plugins.Dirs, SHA256: s.SHA256, Config: raw}
	}
	return specs, nil
}

// Run runs the daemon until ctx ends, then shuts it down and returns nil, or
// returns the error that kept it from starting.
func (d *Daemon) Run(ctx context.Context) error {
	cfg := d.cfg
	ic, err := Compile(cfg)
	if err != nil {
		return err
	}
	specs, err := PluginSpecs(cfg)
	if err != nil {
		return err
	}

	db, err := badgerlog.Open(cfg.Log.Dir, &badgerlog.Options{
		Logger:    d.log.With("component", "log"),
		Retention: cfg.Log.Retention.Duration,
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := db.Close(); err != nil {
			d.log.Error("close event log", "err", err)
		}
	}()

	// Plugins first: a sink that cannot start is a start-up error.
	popts := &pluginhost.Options{Logger: d.log}
	for _, spec := range specs {
		s := &sink{name: spec.Sink, sup: pluginhost.NewSupervisor(spec, popts), q: db.Queue(spec.Sink)}
		d.sinks = append(d.sinks, s)
	}
	defer d.stopPlugins()
	for _, s := range d.sinks {
		if err := s.sup.Start(ctx); err != nil {
			return fmt.Errorf("start sink %q: %w", s.name, err)
		}
	}

	var cert *certificate
	if cfg.Server.TLSCertFile != "" {
		if cert, err = newCertificate(cfg.Server.TLSCertFile, cfg.Server.TLSKeyFile, d.log); err != nil {
			return err
		}
		d.cert.Store(cert)
	}
	ingestLn, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("ingest listener: %w (change [server] listen)", err)
	}
	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		ingestLn.Close()
		return fmt.Errorf("admin listener: %w (change [admin] listen)", err)
	}

	w := writer.New(db, &writer.Options{Logger: d.log.With("component", "writer")})
	h := ingest.New(ic, w, d.log.With("component", "ingest"))
	ingestSrv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.Duration,
		ReadTimeout:       cfg.Server.ReadTimeout.Duration,
		WriteTimeout:      cfg.Server.WriteTimeout.Duration,
		IdleTimeout:       cfg.Server.IdleTimeout.Duration,
		MaxHeaderBytes:    int(cfg.Server.MaxHeaderBytes),
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
	}
	if cert != nil {
		ingestSrv.TLSConfig = cert.tlsConfig()
	}
	adminSrv := &http.Server{
		Handler:           admin.Handler(admin.Options{Ready: d.readyErr, Sinks: d.sinkStatus}),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
	}

	var wg sync.WaitGroup
	serve := func(srv *http.Server, ln net.Listener, name string) {
		defer wg.Done()
		var err error
		if srv.TLSConfig != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("listener failed", "listener", name, "err", err)
		}
	}
	wg.Add(2)
	go serve(ingestSrv, ingestLn, "ingest")
	go serve(adminSrv, adminLn, "admin")

	dctx, stopDispatch := context.WithCancel(context.Background())
	var dwg sync.WaitGroup
	for i, s := range d.sinks {
		del := cfg.Sinks[i].Delivery
		disp := dispatch.New(dispatch.Options{
			Sink:        s.name,
			Queue:       s.q,
			Deliverer:   s.sup,
			BatchMax:    del.BatchMax,
			BatchWait:   del.BatchWait.Duration,
			MaxAttempts: del.MaxAttempts,
			BackoffMin:  del.BackoffMin.Duration,
			BackoffMax:  del.BackoffMax.Duration,
			Logger:      d.log.With("component", "dispatch"),
		})
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			if err := disp.Run(dctx); err != nil {
				d.log.Error("dispatcher stopped", "sink", s.name, "err", err)
			}
		}()
	}

	d.ready.Store(true)
	scheme := "http"
	if cert != nil {
		scheme = "https"
	}
	d.log.Info("pipelined is ready", "ingest", ingestLn.Addr().String(), "scheme", scheme, "admin", adminLn.Addr().String(),
		"sources", len(cfg.Sources), "sinks", len(cfg.Sinks), "routes", len(cfg.Routes), "log_dir", cfg.Log.Dir)
	if d.o.OnReady != nil {
		d.o.OnReady(ingestLn.Addr(), adminLn.Addr())
	}

	<-ctx.Done()
	d.ready.Store(false)
	d.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.Duration)
	defer cancel()
	// 1. Stop accepting; answer the requests in flight (they wait for the writer).
	if err := ingestSrv.Shutdown(sctx); err != nil {
		d.log.Warn("ingest shutdown did not finish in time", "err", err)
	}
	// 2. Append what the writer holds.
	w.Close()
	// 3. Finish and settle the batches in flight, then stop dispatching.
	stopDispatch()
	dwg.Wait()
	// 4. The admin API goes last, so operators see the shutdown.
	if err := adminSrv.Shutdown(sctx); err != nil {
		d.log.Warn("admin shutdown did not finish in time", "err", err)
	}
	wg.Wait()
	// Plugins are stopped and the log is closed by the deferred calls.
	return nil
}

func (d *Daemon) stopPlugins() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range d.sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.sup.Stop(ctx); err != nil {
				d.log.Warn("stop sink plugin", "sink", s.name, "err", err)
			}
		}()
	}
	wg.Wait()
}

// readyErr reports readiness: ready from the moment every plugin answered
// and the listeners are bound until shutdown starts. A plugin that restarts
// later does not make the daemon unready: ingest keeps accepting durably,
// and /v1/sinks shows the plugin's state.
func (d *Daemon) readyErr() error {
	if !d.ready.Load() {
		return errors.New("starting or stopping")
	}
	return nil
}

func (d *Daemon) sinkStatus(ctx context.Context) ([]admin.SinkStatus, error) {
	out := make([]admin.SinkStatus, 0, len(d.sinks))
	for _, s := range d.sinks {
		st, pid, lastErr := s.sup.State()
		qs, err := s.q.Stats(ctx)
		if err != nil {
			return nil, fmt.Errorf("sink %s: %w", s.name, err)
		}
		ss := admin.SinkStatus{Name: s.name, Plugin: st, PID: pid, Ready: qs.Ready, Retrying: qs.Retrying, Dead: qs.Dead}
		if lastErr != nil {
			ss.LastError = lastErr.Error()
		}
		out = append(out, ss)
	}
	return out, nil
}
