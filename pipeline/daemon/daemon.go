// Package daemon wires the parts of pipelined together: config → event log →
// writer → ingest and admin listeners → one dispatcher and one plugin per
// sink. [Daemon.Run] runs them until its context ends, then shuts down in the
// order that loses nothing: stop accepting, answer in-flight requests, flush
// the writer, finish in-flight deliveries, stop plugins, close the log. Each
// step is bounded: a log that cannot commit or close is given up on (see
// [ErrUncleanStop]) rather than waited for until systemd kills the daemon.
// [Daemon.Reload] applies a new configuration while it runs.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/inspector"
	"github.com/pipelined/pipelined/pipeline/internal/sdlisten"
	"github.com/pipelined/pipelined/pipeline/internal/sdnotify"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/pluginhost"
	"github.com/pipelined/pipelined/pipeline/rules"
	"github.com/pipelined/pipelined/pipeline/telemetry"
	"github.com/pipelined/pipelined/pipeline/writer"
)

// Notifier tells a service manager how the daemon is doing: systemd's
// sd_notify protocol (package sdnotify). Its methods are called from one
// goroutine at a time: the daemon's main loop, or, while the daemon opens
// its log or stops, the goroutine that reports how that goes.
type Notifier interface {
	// Ready says the daemon serves; status is a one-line summary.
	Ready(status string) error
	// Reloading says a reload started; Ready follows when it ends.
	Reloading() error
	// Stopping says shutdown started; Status follows while it waits
	// (for a sink's batch in flight, say).
	Stopping() error
	// Status updates the one-line summary.
	Status(status string) error
	// ExtendTimeout asks for d more time to finish starting; it is sent
	// every openTick while a long Open of the log makes progress.
	ExtendTimeout(d time.Duration) error
	// Watchdog says the daemon is alive; it is sent every
	// WatchdogInterval (0: never) after the writer answered a ping.
	Watchdog() error
	WatchdogInterval() time.Duration
}

// Options configures a [Daemon].
type Options struct {
	// Logger receives everything the daemon logs. Default: discard.
	Logger *slog.Logger
	// OnReady, if set, is called once the daemon serves: the log is open,
	// the plugins were started and both listeners are bound.
	OnReady func(ingestAddr, adminAddr net.Addr)
	// Load reads the configuration again, for a reload (SIGHUP,
	// POST /v1/reload). Nil: reloads are refused.
	Load func() (*config.Config, error)
	// Notifier hears about readiness, reloads, shutdown and the watchdog.
	// Nil means systemd's, from NOTIFY_SOCKET and WATCHDOG_USEC, which New
	// then removes from the environment so that plugins never see them;
	// without NOTIFY_SOCKET it does nothing.
	Notifier Notifier
	// Listeners are listening sockets to serve instead of binding [server]
	// listen and [admin] listen, by name: "ingest" and "admin" (systemd
	// socket activation, FileDescriptorName=). Nil means systemd's, from
	// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, which New then removes
	// from the environment so that plugins never see them; without
	// LISTEN_FDS the daemon binds its own. Run checks them before anything
	// starts (see [ErrSocketActivation]).
	Listeners map[string]net.Listener
	// Build names the running build (pipelined_build_info).
	Build Build
}

// Build names the running build, for the pipelined_build_info metric and
// the start-up log line. Empty fields are shown as "unknown".
type Build struct {
	Version, Commit, Date, Go string
}

// Daemon is one running pipelined.
type Daemon struct {
	o   Options
	log *slog.Logger

	cfg     atomic.Pointer[config.Config] // the configuration in force
	ready   atomic.Bool
	cert    atomic.Pointer[certificate] // nil without TLS
	reloads chan chan reloaded          // served by Run's main loop
	looped  chan struct{}               // closed when the main loop has returned: no reload is served after
	running atomic.Bool

	db      pipeline.Log
	h       *ingest.Handler
	audit   *ingest.Audit // keeps rejected requests; set by Run
	metrics *metrics.Metrics
	sinks

	// tracer is the tracer in force; nil when tracing is off.
	tracer atomic.Pointer[telemetry.Tracer]

	// openLog is [openLog]; tests put a log double in its place.
	openLog func(ctx context.Context, c config.Log, log *slog.Logger, progress *atomic.Int64) (pipeline.Log, func() map[string]int64, error)
	// openTick is how often a long open of the log is reported (openTick).
	openTick time.Duration
	// ingestInFlight counts the ingest requests being served, for the
	// shutdown's report.
	ingestInFlight atomic.Int64

	// sockets are the listeners systemd passed, by name (Options.Listeners);
	// socketsErr is why they could not be taken.
	sockets    map[string]net.Listener
	socketsErr error
}

// New returns a daemon for cfg, which must come from config.Load or config.Parse.
func New(cfg *config.Config, o *Options) *Daemon {
	var opts Options
	if o != nil {
		opts = *o
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Notifier == nil {
		opts.Notifier = sdnotify.FromEnv()
	}
	reg := prometheus.NewRegistry()
	metrics.RegisterProcess(reg)
	metrics.RegisterBuildInfo(reg, orUnknown(opts.Build.Version), orUnknown(opts.Build.Commit), orUnknown(opts.Build.Go))
	d := &Daemon{o: opts, log: opts.Logger, reloads: make(chan chan reloaded), looped: make(chan struct{}), metrics: metrics.New(reg), openLog: openLog, openTick: openTick}
	reg.MustRegister(d.tracingCollector())
	d.sockets = opts.Listeners
	if d.sockets == nil {
		d.sockets, d.socketsErr = sdlisten.FromEnv()
	}
	d.cfg.Store(cfg)
	d.sinks.log = opts.Logger
	d.sinks.metrics = d.metrics
	d.sinks.status = d.stoppingStatus
	return d
}

// ReloadTLS reads the ingest listener's certificate and key again.
func (d *Daemon) ReloadTLS() {
	if c := d.cert.Load(); c != nil {
		c.Reload()
	}
}

// Reload reads the configuration again (Options.Load) and applies it: new
// rules at once, new sinks started, changed ones restarted, removed ones
// stopped after their in-flight batch (their queued events stay in the
// log). A configuration that does not load, or a sink whose plugin does not
// start, is refused and the running one stays. Safe to call from any
// goroutine while Run runs.
func (d *Daemon) Reload(ctx context.Context) error {
	_, err := d.reloadAndWait(ctx)
	return err
}

// reloaded is what a reload came to: the keys it changed that take
// effect only at a restart, or the error that refused it.
type reloaded struct {
	res admin.ReloadResult
	err error
}

// errShuttingDown answers a reload asked for once shutdown has begun.
var errShuttingDown = errors.New("reload: pipelined is shutting down")

// reloadAndWait is Reload that also returns the changed keys that wait
// for a restart or that the file cannot change, for the admin API's answer.
func (d *Daemon) reloadAndWait(ctx context.Context) (admin.ReloadResult, error) {
	if !d.running.Load() {
		return admin.ReloadResult{}, errors.New("reload: pipelined is not running")
	}
	res := make(chan reloaded, 1)
	select {
	case d.reloads <- res:
	case <-d.looped:
		return admin.ReloadResult{}, errShuttingDown
	case <-ctx.Done():
		return admin.ReloadResult{}, ctx.Err()
	}
	select {
	case r := <-res:
		return r.res, r.err
	case <-ctx.Done():
		return admin.ReloadResult{}, ctx.Err()
	}
}

// Run runs the daemon until ctx ends, then shuts it down and returns nil, or
// returns the error that kept it from starting. When the event log stops
// taking writes for good ([pipeline.Halter]), Run shuts down as when ctx
// ends and returns an error wrapping [pipeline.ErrHalted]: only a new
// start heals the log. A stop that had to give up
// on the event log (it did not commit or close in time) returns an error
// wrapping [ErrUncleanStop].
func (d *Daemon) Run(ctx context.Context) (err error) {
	// A halted log ends the run as a signal does: everything that runs
	// until ctx ends stops before the shutdown waits for it.
	ctx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	cfg := d.cfg.Load()
	ic, specs, token, err := prepare(cfg)
	if err != nil {
		return err
	}
	if err := d.checkSockets(token); err != nil {
		return err
	}
	if n := len(token); n > 0 && n < admin.StrongToken {
		d.log.Warn("the admin token is shorter than 32 characters: whoever reaches the admin listener (every local user: loopback clients share one address) can lock operators out with 10 wrong tokens a minute, after which the right one waits too; a token of 32 characters or more is never held back (openssl rand -hex 32)",
			"bytes", n)
	}
	ic.Metrics = d.metrics
	tracer, err := d.startTracing(cfg)
	if err != nil {
		return err
	}
	defer d.stopTracing(tracer) // after the dispatchers: their last spans are exported
	d.tracer.Store(tracer)
	d.sinks.tracer = tracer
	ic.Tracing = tracer
	if d.sinks.pauses, err = loadPauses(cfg.Log.Dir); err != nil {
		return err
	}

	// A second daemon on the same log fails here, before its plugins run
	// their Configure against the first one's databases and files.
	if err := logInUse(cfg.Log); err != nil {
		return err
	}
	// The plugins start while the log opens, all at once: a restart is
	// ready after the slowest of them, not after their sum. They are all
	// started before the listeners open: a sink that cannot start is a
	// start-up error. Whatever started is installed, so that stopAll stops
	// it on every path.
	sctx, cancelStarts := context.WithCancel(ctx)
	defer cancelStarts() // nothing keeps it after Start returns
	starts := d.startPlugins(sctx, specs)
	db, err := d.open(ctx, cfg.Log, len(specs))
	if err != nil {
		cancelStarts() // the error is not held behind the plugins' Configure
		d.stopStarts(starts)
		return err
	}
	// What the stop gave up on; the log's close, bounded, is the last
	// step, and the line that says what was given up comes after it.
	var stop gaveUp
	var stopBegan time.Time
	defer func() {
		if stopBegan.IsZero() { // a start that failed
			stopBegan = time.Now()
		}
		stop.close = d.closeLog(db)
		if gerr := d.sayGaveUp(stop, stopBegan); gerr != nil && err == nil {
			err = gerr
		}
	}()
	defer d.stopAll()
	if cfg.Log.Backend != "jetstream" { // which offers no give-ups (see servers)
		if err := d.sinks.restoreGiveUps(ctx, cfg.Log.Dir); err != nil {
			return err
		}
	}
	started, err := d.startSinks(ctx, starts, cfg.Sinks, cfg.Plan().OrderKeys)
	d.install(started)
	if err != nil {
		return err
	}
	ls, err := d.listen(cfg)
	if err != nil {
		return err
	}

	w := writer.New(db, &writer.Options{Logger: d.log.With("component", "writer"), Metrics: d.metrics, Tracing: tracer})
	// Rejected requests are kept off the request path and off the group
	// commit; the audit is closed after the ingest listener.
	if rl, ok := db.(pipeline.RejectionLog); ok {
		d.audit = ingest.NewAudit(rl, &ingest.AuditOptions{Logger: d.log.With("component", "audit"), Metrics: d.metrics})
	}
	ic.Audit = d.audit
	d.h = ingest.New(ic, w, d.log.With("component", "ingest"))
	srv := d.servers(cfg, ls, token, w)
	srv.serve()
	if srv.ui != nil {
		// Until ctx ends: the UI's streams and replays stop before the
		// admin listener shuts down, so that they do not hold it.
		srv.wg.Add(1)
		go func() { defer srv.wg.Done(); srv.ui.Run(ctx) }()
	}
	for _, sr := range started {
		sr.startDispatch()
	}
	orphans := make(chan struct{})
	go func() { defer close(orphans); d.sinks.adoptOrphans(ctx) }()
	defer func() { <-orphans }() // before the log closes

	if wc, ok := db.(pipeline.WriteChecker); ok {
		if err := wc.CheckWrite(); err != nil { // a disk too small or full from the start
			d.log.Warn("the event log cannot take writes: webhooks are answered 503 and /readyz fails until space is freed",
				"err", err)
		}
	}
	d.ready.Store(true)
	d.running.Store(true)
	d.log.Info("pipelined is ready", "ingest", ls.ingest.Addr().String(), "scheme", ls.scheme(), "admin", ls.admin.Addr().String(),
		"sources", len(cfg.Sources), "sinks", len(cfg.Sinks), "routes", len(cfg.Routes), "log_dir", cfg.Log.Dir)
	if d.o.OnReady != nil {
		d.o.OnReady(ls.ingest.Addr(), ls.admin.Addr())
	}
	d.notify(func(n Notifier) error { return n.Ready(d.status(ls.ingest.Addr())) })

	h, _ := db.(pipeline.Halter)
	halt := d.mainLoop(ctx, w, ls.ingest.Addr(), h)
	stopRun()

	stopBegan = time.Now()
	stop = d.shutdown(srv, w)
	// Plugins are stopped and the log is closed by the deferred calls.
	return halt
}

// prepare derives from cfg what Run serves: the ingest configuration, how
// to start each sink's plugin, and the admin token.
func prepare(cfg *config.Config) (ingest.Config, []pluginhost.Spec, []byte, error) {
	ic, err := ingest.FromConfig(cfg)
	if err != nil {
		return ic, nil, nil, err
	}
	specs, err := PluginSpecs(cfg)
	if err != nil {
		return ic, nil, nil, err
	}
	token, err := cfg.AdminToken()
	return ic, specs, token, err
}

// maxPayloadMargin is room in a NATS message for an event's fields other
// than its body (headers, ids, the route) when max_body is set against the
// servers' max_payload.
const maxPayloadMargin = 64 << 10

// open opens the event log and points the metrics at it.
func (d *Daemon) open(ctx context.Context, c config.Log, plugins int) (pipeline.Log, error) {
	var progress atomic.Int64
	stop := d.reportOpening(c, &progress)
	db, logSize, err := d.openLog(ctx, c, d.log.With("component", "log"), &progress)
	if extended := stop(); extended && err == nil {
		// Past TimeoutStartSec perhaps: the plugins' starts, which began
		// with the open and run together, may not be done; the slowest is
		// bounded by its three steps' timeouts.
		var starts time.Duration
		if plugins > 0 {
			starts = 3 * pluginhost.DefaultStartTimeout
		}
		d.notify(func(n Notifier) error { return n.ExtendTimeout(starts + 3*d.openTick) })
	}
	if err != nil {
		return nil, err
	}
	if mp, ok := db.(interface{ MaxPayload() int64 }); ok {
		// An event's message holds its body in base64 (4/3 of it) beside
		// its other fields.
		if body := int64(d.cfg.Load().Server.MaxBody); body*4/3+maxPayloadMargin > mp.MaxPayload() {
			d.log.Warn("server.max_body is above what the NATS servers take in one message (max_payload: the body goes in base64, 4/3 of its size, beside the event's other fields): bodies near max_body are refused 413; raise max_payload above 1.4 times max_body on the servers, or lower max_body",
				"max_body", body, "max_payload", mp.MaxPayload())
		}
	}
	d.db = db
	d.sinks.db = db
	d.metrics.SetLogSize(logSize)
	d.metrics.SetQueueSource(d.queueSamples)
	return db, nil
}

// startSinks waits for the plugins [sinks.startPlugins] started and
// returns a sink for each, in config order, with the first error. A plugin
// that cannot start is a start-up error, unless its process merely exited
// while starting (a crash, not a config problem): then its supervisor keeps
// trying on its own and the sink shows failed in /v1/sinks, while webhooks
// are taken and queued.
func (d *Daemon) startSinks(ctx context.Context, starts []*pluginStart, sinks []config.Sink, orderKeys map[string]*rules.Program) ([]*sinkRun, error) {
	started := make([]*sinkRun, len(starts))
	for i, ps := range starts {
		<-ps.done
		started[i] = d.sinkRun(ps.spec, ps.sup, sinks[i].Delivery, orderKeys[ps.spec.Sink])
	}
	for _, ps := range starts {
		if ps.err == nil {
			continue
		}
		if errors.Is(ps.err, pluginhost.ErrPluginExited) && ctx.Err() == nil {
			d.log.Error("sink plugin exited at start; serving anyway, its events wait in the log while it is tried again",
				"sink", ps.spec.Sink, "err", ps.err)
			continue
		}
		return started, fmt.Errorf("start %w", ps.err) // it names the sink
	}
	return started, nil
}

// listeners are the daemon's two bound listeners and the ingest
// listener's certificate (nil without TLS).
type listeners struct {
	ingest, admin net.Listener
	cert          *certificate
	// adminAddr is where the admin listener listens, as [admin] listen
	// says it, or the address of the socket systemd passed.
	adminAddr string
}

func (ls *listeners) scheme() string {
	if ls.cert != nil {
		return "https"
	}
	return "http"
}

// listen reads the certificate, if any, and binds both listeners.
func (d *Daemon) listen(cfg *config.Config) (*listeners, error) {
	ls := &listeners{}
	if cfg.Server.TLSCertFile != "" {
		var err error
		if ls.cert, err = newCertificate(cfg.Server.TLSCertFile, cfg.Server.TLSKeyFile, d.log); err != nil {
			return nil, err
		}
		d.cert.Store(ls.cert)
	}
	var err error
	if ls.ingest = d.sockets[ingestSocket]; ls.ingest == nil {
		if ls.ingest, err = net.Listen("tcp", cfg.Server.Listen); err != nil {
			return nil, fmt.Errorf("ingest listener: %w (change [server] listen)", err)
		}
	}
	proxies, _ := config.ParsePrefixes(cfg.Server.TrustedProxies) // checked by Validate
	ls.ingest = limitPerIP(ls.ingest, cfg.Server.MaxConnsPerIP, proxies)
	if ls.admin = d.sockets[adminSocket]; ls.admin == nil {
		if ls.admin, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			ls.ingest.Close()
			return nil, fmt.Errorf("admin listener: %w (change [admin] listen)", err)
		}
	}
	ls.adminAddr = cfg.Admin.Listen
	if d.sockets[adminSocket] != nil {
		ls.adminAddr = ls.admin.Addr().String()
	}
	d.sayInherited(cfg, ls)
	// The admin listener is bounded as ingest's is: its connections were
	// not, so one peer (any client that reaches it, with no token: a 401
	// is kept alive for idle_timeout) could hold every file descriptor of
	// the daemon, and the log's own files failed to open.
	adminProxies, _ := config.ParsePrefixes(cfg.Admin.TrustedProxies) // checked by Validate
	ls.admin = limitPerIP(ls.admin, cfg.Server.MaxConnsPerIP, adminProxies)
	return ls, nil
}

// servers are the ingest and admin HTTP servers on their listeners.
type servers struct {
	log           *slog.Logger
	ls            *listeners
	ingest, admin *http.Server
	// endAdminCalls cancels the context of every admin request, so that
	// a long call (dlq add --all, a retry of a whole dead-letter queue, a
	// replay) stops at its next page before the log closes.
	endAdminCalls context.CancelFunc
	wg            sync.WaitGroup
	// ui is the admin listener's web UI; nil when [admin] ui = false.
	ui *inspector.UI
}

// servers builds the HTTP servers: ingest serves d.h, admin the admin API.
func (d *Daemon) servers(cfg *config.Config, ls *listeners, token []byte, w *writer.Writer) *servers {
	errorLog := slog.NewLogLogger(d.log.Handler(), slog.LevelDebug)
	s := &servers{log: d.log, ls: ls}
	s.ingest = &http.Server{
		Handler:           countRequests(d.h, &d.ingestInFlight),
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.Duration,
		ReadTimeout:       cfg.Server.ReadTimeout.Duration,
		WriteTimeout:      cfg.Server.WriteTimeout.Duration,
		IdleTimeout:       cfg.Server.IdleTimeout.Duration,
		MaxHeaderBytes:    int(cfg.Server.MaxHeaderBytes),
		ErrorLog:          errorLog,
	}
	if ls.cert != nil {
		s.ingest.TLSConfig = ls.cert.tlsConfig()
	}
	ao := admin.Options{
		ReadyChecks:          func(ctx context.Context) []admin.ReadyCheck { return d.readyChecks(ctx, d.db, w) },
		Sinks:                d.sinkStatus,
		Log:                  d.db,
		Reload:               func() (admin.ReloadResult, error) { return d.reloadAndWait(context.Background()) },
		Pause:                d.pause,
		ProbeNow:             d.probeNow,
		OnDropDead:           d.droppedDead,
		Retarget:             d.retarget,
		Token:                token,
		AllowUnauthenticated: len(token) == 0 && config.OnLoopback(ls.adminAddr),
		Logger:               d.log.With("component", "admin"),
		Metrics:              d.metrics.Handler(),
		Pprof:                cfg.Admin.Pprof,
		Hosts:                adminHosts(ls.adminAddr, cfg.Admin.Listen),
		Guesses:              admin.NewGuesses(), // the API's token and the UI's login share it
		TrustedProxies:       cfg.Plan().AdminTrustedProxies,
	}
	if cfg.Log.Backend != "jetstream" {
		// With JetStream the daemons share the queues, and each would keep
		// its own list of what to give up on: one that did not act on an
		// entry would keep its seq and kill the event's next life (a DLQ
		// retry through another daemon).
		d.giveUpOptions(&ao)
	}
	if cfg.Admin.UI {
		s.ui = inspector.New(inspector.Options{Admin: ao, Counts: d.metrics.Counts, Subscribe: w.Subscribe, SinkNames: d.sinkNames})
		ao.UI = s.ui
	}
	adminCtx, endAdminCalls := context.WithCancel(context.Background())
	s.endAdminCalls = endAdminCalls
	s.admin = &http.Server{
		Handler:           admin.Handler(ao),
		BaseContext:       func(net.Listener) context.Context { return adminCtx },
		ReadHeaderTimeout: min(5*time.Second, cfg.Admin.ReadTimeout.Duration),
		ReadTimeout:       cfg.Admin.ReadTimeout.Duration,
		WriteTimeout:      cfg.Admin.WriteTimeout.Duration,
		IdleTimeout:       cfg.Admin.IdleTimeout.Duration,
		ErrorLog:          errorLog,
	}
	return s
}

// sinkNames lists the sinks of the running configuration.
func (d *Daemon) sinkNames() []string {
	var names []string
	for _, s := range d.cfg.Load().Sinks {
		names = append(names, s.Name)
	}
	return names
}

// adminHosts are the hosts of the admin listener's addresses as a Host
// header may name them: the address it listens on and admin.listen, which
// differ when systemd passes the socket (an IP, where admin.listen may
// name admin.internal:8081); none for a wildcard address (the address each
// connection arrives on is accepted anyway).
func adminHosts(addrs ...string) []string {
	var hosts []string
	for _, listen := range addrs {
		host, _, err := net.SplitHostPort(listen)
		if err != nil || host == "" || slices.Contains(hosts, host) {
			continue
		}
		if a, err := netip.ParseAddr(host); err == nil && a.IsUnspecified() {
			continue
		}
		hosts = append(hosts, host)
	}
	return hosts
}

// serve starts serving both listeners, each in a goroutine that wait
// waits for.
func (s *servers) serve() {
	run := func(srv *http.Server, ln net.Listener, name string) {
		defer s.wg.Done()
		var err error
		if srv.TLSConfig != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("listener failed", "listener", name, "err", err)
		}
	}
	s.wg.Add(2)
	go run(s.ingest, s.ls.ingest, "ingest")
	go run(s.admin, s.ls.admin, "admin")
}

// shutdown stops the daemon in the order that loses nothing, within
// [server] shutdown_timeout: what is not settled by then is delivered
// again after a restart, and the log says which sinks' events. The writer
// gets writerGrace more to commit what it holds; what it has not committed
// by then is answered 503 (see [writer.Writer.Shutdown]) and returned as
// given up. A step that waits longer than stopGrace is reported (see
// [reportStop]).
func (d *Daemon) shutdown(srv *servers, w *writer.Writer) (g gaveUp) {
	d.running.Store(false)
	d.ready.Store(false)
	d.notify(Notifier.Stopping)
	d.log.Info("shutting down")
	limit := d.cfg.Load().Server.ShutdownTimeout.Duration
	sctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	deadline, _ := sctx.Deadline()
	rep := reportStop(d.log, d.stoppingStatus, "shutdown_timeout", limit, d.sinks.timing)
	defer rep.stop()
	// 1. Stop accepting; answer the requests in flight (they wait for the writer).
	rep.waitFor(ingestWaits(&d.ingestInFlight))
	if err := srv.ingest.Shutdown(sctx); err != nil {
		d.log.Warn("ingest shutdown did not finish in time", "requests", d.ingestInFlight.Load(), "err", err)
	}
	// 2. Append what the writer holds; write the rejections queued.
	rep.waitPastDeadline(waitingOn("shutting down: waiting for the writer to append the events it holds", "the writer"))
	t := d.sinks.timing.withDefaults()
	wctx, wcancel := context.WithDeadlineCause(context.Background(), deadline.Add(t.writerGrace),
		fmt.Errorf("the event log did not commit within shutdown_timeout (%v) and %v more", limit, t.writerGrace))
	if err := w.Shutdown(wctx); err != nil {
		g.writer = err
		var ae *writer.AbandonError
		if errors.As(err, &ae) {
			g.requests = ae.Entries
		}
		waitAnswered(&d.ingestInFlight, answerWait)
	}
	wcancel()
	rep.waitFor(waitingOn("shutting down: waiting for the rejected requests to be kept", "the rejected requests' audit"))
	if err := d.audit.Close(sctx); err != nil {
		d.log.Warn("rejected requests not all kept before shutdown", "err", err)
	}
	// 3. Finish and settle the batches in flight, then stop dispatching.
	rep.waitFor(d.sinks.dispatchWaits)
	d.unsettled(d.stopDispatch(sctx), limit)
	// 4. The admin API goes last, so operators see the shutdown.
	rep.waitFor(waitingOn("shutting down: waiting for the admin requests in flight to be answered", "admin requests in flight"))
	// A long call ends at its next page; what it did is kept (each page
	// is one transaction of the log) and a call after the restart goes on.
	srv.endAdminCalls()
	if err := srv.admin.Shutdown(sctx); err != nil {
		d.log.Warn("admin shutdown did not finish in time", "err", err)
	}
	srv.wg.Wait()
	return g
}

// stoppingStatus tells systemd what a stop waits for.
func (d *Daemon) stoppingStatus(s string) {
	d.notify(func(n Notifier) error { return n.Status(s) })
}

// mainLoop serves reloads and proves liveness to the watchdog until ctx
// ends. A reload runs beside the loop, one at a time: it can take a while
// (new plugins start, a replaced sink's batch in flight is waited for), and
// the watchdog must go on hearing from a daemon that is alive meanwhile,
// or systemd would kill it halfway through the reload. When ctx ends, the
// loop waits for the reload that runs, so shutdown never races it. When
// the log halts (h, nil for a log that never does), the loop returns its
// error: the daemon stops with it, and its service manager starts it
// again, whose start heals the log.
func (d *Daemon) mainLoop(ctx context.Context, w *writer.Writer, ingestAddr net.Addr, h pipeline.Halter) error {
	defer close(d.looped)
	var tick <-chan time.Time
	if d.o.Notifier != nil {
		if iv := d.o.Notifier.WatchdogInterval(); iv > 0 {
			t := time.NewTicker(iv)
			defer t.Stop()
			tick = t.C
		}
	}
	var halted <-chan struct{}
	if h != nil {
		halted = h.Halted()
	}
	reloads := d.reloads    // nil while a reload runs: the next one waits
	var done chan reloaded  // the running reload's outcome
	var reply chan reloaded // the running reload's asker
	for {
		select {
		case <-ctx.Done():
			if done != nil {
				reply <- <-done
			}
			return nil
		case <-halted:
			err := h.HaltErr()
			d.log.Error("stopping: the event log stopped writing, and only a new start applies what it wrote in order; a service manager starts pipelined again (systemd: Restart=on-failure)",
				"err", err)
			d.stoppingStatus("stopping: the event log stopped writing")
			if done != nil {
				reply <- <-done
			}
			return err
		case <-tick:
			// The watchdog hears from us only if the writer, the heart of
			// ingest, answers: a stuck pipeline gets restarted.
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := w.Ping(pctx)
			cancel()
			if err != nil {
				d.log.Error("writer did not answer the watchdog ping", "err", err)
				continue
			}
			d.notify(Notifier.Watchdog)
		case reply = <-reloads:
			d.notify(Notifier.Reloading)
			reloads, done = nil, make(chan reloaded, 1)
			go func(done chan<- reloaded) {
				res, err := d.reload(ctx)
				done <- reloaded{res, err}
			}(done)
		case r := <-done:
			d.notify(func(n Notifier) error { return n.Ready(d.status(ingestAddr)) })
			reply <- r
			reloads, done, reply = d.reloads, nil, nil
		}
	}
}

func (d *Daemon) notify(f func(Notifier) error) {
	if d.o.Notifier == nil {
		return
	}
	if err := f(d.o.Notifier); err != nil {
		d.log.Warn("notify the service manager", "err", err)
	}
}

// status is the one-line summary for the service manager.
func (d *Daemon) status(ingestAddr net.Addr) string {
	cfg := d.cfg.Load()
	return fmt.Sprintf("serving %d sources on %s, delivering to %d sinks by %d routes",
		len(cfg.Sources), ingestAddr, len(cfg.Sinks), len(cfg.Routes))
}

// reload applies the configuration that Options.Load reads.
func (d *Daemon) reload(ctx context.Context) (res admin.ReloadResult, err error) {
	defer func() {
		d.metrics.Reload(err)
		if err != nil {
			d.log.Error("reload refused; the running configuration stays", "err", err)
		} else {
			d.log.Info("configuration reloaded")
		}
	}()
	if d.o.Load == nil {
		return res, errors.New("reload: this daemon was started without a configuration file to read again")
	}
	cfg, err := d.o.Load()
	if err != nil {
		return res, fmt.Errorf("reload: %w", err)
	}
	ic, err := ingest.FromConfig(cfg)
	if err != nil {
		return res, fmt.Errorf("reload: %w", err)
	}
	ic.Metrics = d.metrics
	ic.Audit = d.audit
	ic.Tracing = d.tracer.Load()
	specs, err := PluginSpecs(cfg)
	if err != nil {
		return res, fmt.Errorf("reload: %w", err)
	}
	changes := keepStartOnly(cfg, d.cfg.Load())
	if len(changes) > 0 {
		// What was checked at load had the new values; what will run has
		// the old ones (order_key needs the badger backend, say).
		if err := cfg.Recheck(); err != nil {
			return res, fmt.Errorf("reload: with the settings read only at start as they run: %w", err)
		}
	}
	if err := d.applySinks(ctx, specs, cfg.Sinks, cfg.Plan().OrderKeys); err != nil {
		return res, fmt.Errorf("reload: %w", err)
	}
	d.h.Swap(ic)
	d.cfg.Store(cfg)
	d.ReloadTLS()
	d.warnStartOnly(changes)
	for _, c := range changes {
		if d.socketOwned(c.s.key) { // no restart of pipelined changes it: see warnStartOnly
			res.SocketOwned = append(res.SocketOwned, c.s.key)
		} else {
			res.RestartNeeded = append(res.RestartNeeded, c.s.key)
		}
	}
	return res, nil
}

// retarget says what a replayed event becomes for sink under the rules in
// force: the target of the first route that sends it there, or the body
// under route "replay" when no route does any more (the operator asked).
func (d *Daemon) retarget(ev pipeline.Event, sink string) (string, []byte, error) {
	router := d.h.Router()
	doc, err := ingest.Decode(ev.Body)
	if err != nil || router == nil {
		return "replay", nil, nil
	}
	env := &rules.Env{Body: doc, Source: ev.Source, Headers: ev.Headers, ID: ev.ID, ReceivedAt: ev.ReceivedAt}
	targets, _ := router.Route(env)
	for _, t := range targets {
		if t.Sink == sink {
			if t.Err != "" {
				return "", nil, errors.New(t.Err)
			}
			return t.Route, t.Payload, nil
		}
	}
	return "replay", nil, nil
}

// queueSamples reads every sink's queue for the metrics. It also sets
// pipelined_sink_up from each supervisor at every scrape: supervisors set
// it as their plugin comes and goes, but when a reload replaces a sink's
// plugin, the old supervisor's stop comes after the new one's start.
func (d *Daemon) queueSamples(ctx context.Context) ([]metrics.QueueSample, error) {
	var out []metrics.QueueSample
	var errs []error
	_, rebuilding := pipeline.QueuesRebuilding(d.sinks.db) // once: all sinks or none
	for _, sr := range d.sinks.list() {
		removed, paused := sr.reportUp(), sr.pauses.is(sr.name)
		if rebuilding {
			s := metrics.QueueSample{Sink: sr.name, Rebuilding: true, Paused: paused}
			sr.orderSample(&s)
			out = append(out, s)
			continue
		}
		// A sink whose queue the log cannot count (a stream without a
		// quorum) is left out; the others are still reported.
		st, err := sr.q.Stats(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("sink %s: %w", sr.name, err))
			continue
		}
		if gone(removed, st) {
			continue
		}
		oldest, err := sr.q.Oldest(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("sink %s: %w", sr.name, err))
			continue
		}
		s := metrics.QueueSample{Sink: sr.name, Ready: st.Ready, Retrying: st.Retrying, Dead: st.Dead, Oldest: oldest, Paused: paused}
		sr.orderSample(&s)
		out = append(out, s)
	}
	return out, errors.Join(errs...)
}

// readyPingTimeout bounds the writer ping of GET /readyz.
const readyPingTimeout = 2 * time.Second

// readyChecks says whether this daemon can take webhooks: the log is open
// and can take writes (not full: asked of the log when it is a
// [pipeline.WriteChecker], as Badger and memlog are), the listeners are
// bound (and not shutting down), the writer answers a ping. A sink's health is none of
// them: a sink that is down holds its events in the log, and failing
// readiness for it would keep webhooks away (see /v1/sinks).
func (d *Daemon) readyChecks(ctx context.Context, db pipeline.Log, w *writer.Writer) []admin.ReadyCheck {
	serving := d.ready.Load()
	logCheck := admin.ReadyCheck{Name: "log", OK: true}
	if db == nil {
		logCheck.OK, logCheck.Error = false, "the event log is not open"
	} else if wc, ok := db.(pipeline.WriteChecker); ok {
		// Asked afresh each time, so readiness returns by itself once
		// space is freed; a past append's error would need a webhook
		// (that a load balancer no longer sends) to clear.
		if err := wc.CheckWrite(); err != nil {
			logCheck.OK, logCheck.Error = false, fmt.Sprintf("the event log cannot take writes: %v", err)
		}
	}
	listeners := admin.ReadyCheck{Name: "listeners", OK: serving}
	if !serving {
		listeners.Error = "starting or stopping: the listeners are not serving"
	}
	writerCheck := admin.ReadyCheck{Name: "writer", OK: true}
	pctx, cancel := context.WithTimeout(ctx, readyPingTimeout)
	defer cancel()
	if err := w.Ping(pctx); err != nil {
		writerCheck.OK, writerCheck.Error = false, fmt.Sprintf("the writer did not answer a ping within %v: %v", readyPingTimeout, err)
	}
	return []admin.ReadyCheck{logCheck, listeners, writerCheck}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
