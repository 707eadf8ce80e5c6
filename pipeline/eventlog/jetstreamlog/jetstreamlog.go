package jetstreamlog

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/pipelined/pipelined/pipeline"
)

var _ pipeline.Log = (*Log)(nil)

// Options configures [Open]. The zero value connects to nats://127.0.0.1:4222
// and uses the stream PIPELINED with one replica.
type Options struct {
	// URLs are the NATS servers to connect to; the client fails over among them.
	URLs []string
	// Stream names the stream and prefixes its subjects; "" means "PIPELINED".
	Stream string
	// Replicas is the stream's replica count: 1 or 3; 0 means 1.
	Replicas int
	// CredsFile is a NATS credentials file (JWT and NKey seed), NKeyFile a
	// file holding an NKey seed; at most one of them is set.
	CredsFile string
	NKeyFile  string
	// TLS, when not nil, is used to connect (a CA, a client certificate).
	TLS *tls.Config
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
	// Retention is how long an event stays readable by id and listable
	// (Nats-TTL of its message); 0 keeps events until the stream's own
	// limits. Queue and dead-letter entries carry their own copy of the
	// event and are never removed by it (P6).
	Retention time.Duration
	// AckWait is how long a fetched entry stays leased to this process
	// before JetStream hands it to another daemon; a live process renews
	// its leases, so AckWait only bounds how long a crashed daemon's
	// leases wait. 0 means 30s.
	AckWait time.Duration
	// Timeout bounds each request to the server (publish, ack, lookup)
	// when the caller's context has no earlier deadline; 0 means 5s.
	Timeout time.Duration
	// Name is the client connection name shown by the server.
	Name string
}

// Log is a [pipeline.Log] on a NATS JetStream stream. Its methods may be
// called from several goroutines.
type Log struct {
	opts   Options
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	prefix string // subject prefix, the stream name

	closed   chan struct{}
	closeCtx context.Context // done when Close starts
	cancel   context.CancelFunc
	once     sync.Once
	wg       sync.WaitGroup // fetch drainers and lease renewal

	mu     sync.Mutex
	queues map[string]*queue

	rejects rejectLedger // keep_rejected_max; see reject.go

	health  atomic.Pointer[health] // the last look at the stream; see health.go
	looking atomic.Bool            // a look is under way
}

// Subjects of the stream, below the prefix P:
//
//	P.ev.<id>            one event (an evRecord), Nats-TTL = retention
//	P.q.<sink>.<id>      a queue entry of sink (a qRecord: the event, route, payload)
//	P.dlq.<sink>.<id>    a dead letter of sink (a dlqRecord)
//	P.st.<sink>.<seq>    retry state of the entry for event seq (a stRecord)
//	P.dd.<source>.<hash> dedup marker (payload: the event id), Nats-TTL = the source's window
const (
	hdrOff     = "Pl-Off"   // q/dlq written with their event: event seq = own seq - Pl-Off
	hdrSeq     = "Pl-Seq"   // q written later (retry dead, requeue): the event's seq
	hdrState   = "Pl-State" // "1": a st record existed when the q message was written
	hdrSinks   = "Pl-Sinks" // on an event: the JSON list of the sinks it was routed to
	hdrTTL     = "Nats-TTL"
	hdrExpSubj = "Nats-Expected-Last-Subject-Sequence"
	// maxBatch is nats-server's default limit of messages in one atomic batch.
	maxBatch = 1000
)

// Open connects to the servers, creates or updates the stream and returns
// the log. It fails when no server answers before ctx is done.
func Open(ctx context.Context, o Options) (*Log, error) {
	if o.Stream == "" {
		o.Stream = "PIPELINED"
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if !validName.MatchString(o.Stream) {
		return nil, fmt.Errorf("jetstream: stream name %q: use letters, digits, - and _", o.Stream)
	}
	if o.Replicas != 1 && o.Replicas != 3 {
		return nil, fmt.Errorf("jetstream: replicas = %d, want 1 or 3", o.Replicas)
	}
	urls := strings.Join(o.URLs, ",")
	if urls == "" {
		urls = nats.DefaultURL
	}
	log := o.Logger
	nopts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted()) }),
	}
	if o.CredsFile != "" {
		nopts = append(nopts, nats.UserCredentials(o.CredsFile))
	}
	if o.NKeyFile != "" {
		opt, err := nats.NkeyOptionFromSeed(o.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("jetstream: nkey seed file: %w", err)
		}
		nopts = append(nopts, opt)
	}
	if o.TLS != nil {
		nopts = append(nopts, nats.Secure(o.TLS))
	}
	nc, err := nats.Connect(urls, nopts...)
	if err != nil {
		return nil, fmt.Errorf("jetstream: connect to %s: %w%s", redact(o.URLs), err, connectHint(err, o))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	cfg := jetstream.StreamConfig{
		Name:     o.Stream,
		Subjects: []string{o.Stream + ".>"},
		// WorkQueue: an acked (or terminated) queue entry leaves the stream;
		// events, dead letters, retry state and dedup markers have no
		// consumer and stay until their TTL or an explicit delete. No age or
		// size limit ever drops an unacked entry (P6).
		Retention:          jetstream.WorkQueuePolicy,
		Storage:            jetstream.FileStorage,
		Replicas:           o.Replicas,
		MaxMsgsPerSubject:  1,
		Discard:            jetstream.DiscardNew,
		AllowAtomicPublish: true,
		AllowMsgTTL:        true,
		Duplicates:         time.Minute,
	}
	// Said before the update, which may take a while: the stream's data
	// is copied to its new replicas.
	ictx, icancel := context.WithTimeout(ctx, o.Timeout)
	if old, err := js.Stream(ictx, o.Stream); err == nil && old.CachedInfo().Config.Replicas != cfg.Replicas {
		log.Warn("changing the stream's replica count, for every daemon that shares it (the servers copy its data to the new replicas)",
			"stream", o.Stream, "replicas", old.CachedInfo().Config.Replicas, "new", cfg.Replicas)
	}
	icancel()
	stream, err := createStream(ctx, js, cfg, o.Timeout)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: create or update stream %s: %w", o.Stream, err)
	}
	if err := checkFeatures(stream.CachedInfo(), nc.ConnectedServerVersion()); err != nil {
		nc.Close()
		return nil, err
	}
	l := &Log{
		opts:   o,
		nc:     nc,
		js:     js,
		stream: stream,
		prefix: o.Stream,
		closed: make(chan struct{}),
		queues: make(map[string]*queue),
	}
	l.closeCtx, l.cancel = context.WithCancel(context.Background())
	l.spawn(func() {
		n, err := l.migrateDead(l.closeCtx)
		switch {
		case err != nil && l.closeCtx.Err() == nil:
			o.Logger.Warn("jetstream: dead letters of an earlier build not moved; a DLQ page may miss them until the next start", "moved", n, "err", err)
		case n > 0:
			o.Logger.Info("jetstream: dead letters of an earlier build moved to where DLQ pages find them in log order", "moved", n)
		}
	})
	return l, nil
}

// checkFeatures refuses a stream that does not have what the log relies
// on: atomic batch publish (each append is one batch: all of it stored or
// none) and per-message TTLs (dedup markers, retention). A server older
// than 2.12 ignores both settings and creates the stream without them;
// appends would then fail after part of a batch was stored, and be answered
// 503 while their events are delivered all the same.
func checkFeatures(info *jetstream.StreamInfo, version string) error {
	if info != nil && info.Config.AllowAtomicPublish && info.Config.AllowMsgTTL {
		return nil
	}
	name := ""
	if info != nil {
		name = info.Config.Name
	}
	return fmt.Errorf("jetstream: stream %s does not allow atomic batch publish and per-message TTLs: the NATS server this daemon is connected to (version %s) is too old; pipelined needs nats-server 2.12 or newer on every node", name, version)
}

// connectHint says what to look at when the servers refused the daemon's
// connection: its credentials, or its TLS settings.
func connectHint(err error, o Options) string {
	msg := err.Error()
	switch {
	case errors.Is(err, nats.ErrAuthorization) || strings.Contains(msg, "Authorization Violation") || strings.Contains(msg, "Authentication"):
		switch {
		case o.CredsFile != "":
			return " (the servers refused the credentials of [log] creds_file: is it this account's .creds file, with its JWT and seed?)"
		case o.NKeyFile != "":
			return " (the servers refused the NKey of [log] nkey_file: is its seed one of the users the servers know?)"
		}
		return " (the servers require credentials: set [log] creds_file or nkey_file)"
	case strings.Contains(msg, "tls"):
		if o.TLS == nil || len(o.TLS.Certificates) == 0 {
			return " (the TLS handshake failed: if the servers require a client certificate, set [log] tls_cert_file and tls_key_file; tls_ca_file names the CA that signs the servers')"
		}
		return " (the TLS handshake failed: check [log] tls_ca_file against the servers' certificates, and that they accept this client certificate)"
	}
	return ""
}

// createStream creates or updates the stream and returns once it has a
// leader, trying again until ctx ends while the cluster cannot place or
// lead it yet: a cluster that is still forming (a
// peer not yet known or not yet current, no JetStream leader) answers "no
// suitable peers for placement" or 503 for a moment, as at boot under
// systemd when the daemon starts with its NATS servers.
func createStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, timeout time.Duration) (jetstream.Stream, error) {
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*timeout)
		stream, err := js.CreateOrUpdateStream(cctx, cfg)
		cancel()
		if err == nil && !led(stream.CachedInfo()) {
			// Created, but its replicas have not elected a leader yet: a
			// publish now would find no responders. Ask again.
			ictx, icancel := context.WithTimeout(ctx, timeout)
			info, ierr := stream.Info(ictx)
			icancel()
			if ierr == nil && led(info) {
				return stream, nil
			}
			err = ierr
			if err == nil {
				err = fmt.Errorf("stream %s has no leader yet", cfg.Name)
			}
		} else if err == nil || !placementPending(err) {
			return stream, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// led reports whether a stream has a leader to take publishes: always for
// a single server, once elected for a replicated stream.
func led(info *jetstream.StreamInfo) bool {
	return info != nil && (info.Cluster == nil || info.Cluster.Leader != "")
}

// errCodeNoSuitablePeers is nats-server's JSClusterNoPeersErr ("no suitable
// peers for placement"), which the client library has no name for.
const errCodeNoSuitablePeers jetstream.ErrorCode = 10005

// placementPending reports whether err says the cluster cannot take the
// stream yet, rather than that it never will.
func placementPending(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503 || apiErr.ErrorCode == errCodeNoSuitablePeers
	}
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded)
}

var errRequestTimeout = errors.New("jetstream request timed out")

var validName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func redact(urls []string) string {
	out := make([]string, len(urls))
	for i, u := range urls {
		if at := strings.LastIndex(u, "@"); at >= 0 {
			if s := strings.Index(u, "://"); s >= 0 && s < at {
				u = u[:s+3] + "***" + u[at:]
			}
		}
		out[i] = u
	}
	return strings.Join(out, ",")
}

// token makes s one subject token: as is when it is made of letters,
// digits, - and _, otherwise "~" and its base64url.
func token(s string) string {
	if validName.MatchString(s) {
		return s
	}
	return "~" + base64.RawURLEncoding.EncodeToString([]byte(s))
}

func (l *Log) subj(parts ...string) string {
	return l.prefix + "." + strings.Join(parts, ".")
}

func (l *Log) evSubject(id string) string { return l.subj("ev", token(id)) }

func (l *Log) ddSubject(source, key string) string {
	h := sha256.Sum256([]byte(key))
	return l.subj("dd", token(source), hex.EncodeToString(h[:16]))
}

func (l *Log) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

// reqCtx bounds ctx by the log's timeout and by Close.
func (l *Log) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeoutCause(ctx, l.opts.Timeout, errRequestTimeout)
	stop := context.AfterFunc(l.closeCtx, cancel)
	return ctx, func() { stop(); cancel() }
}

// Records stored in messages.

type evRecord struct {
	ID         string            `json:"id"`
	Source     string            `json:"source"`
	ReceivedAt time.Time         `json:"received_at"`
	Headers    map[string]string `json:"headers,omitempty"`
	Body       []byte            `json:"body"` // base64: cheaper to encode than a RawMessage, which is compacted
	Auth       string            `json:"auth,omitempty"`
	DedupKey   string            `json:"dedup_key,omitempty"`
	// TraceParent and TraceState: see [pipeline.Event]. The event message
	// also carries them as traceparent / tracestate headers.
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
}

func toRecord(e pipeline.Event) evRecord {
	return evRecord{ID: e.ID, Source: e.Source, ReceivedAt: e.ReceivedAt, Headers: e.Headers, Body: e.Body, Auth: e.Auth, DedupKey: e.DedupKey,
		TraceParent: e.TraceParent, TraceState: e.TraceState}
}

func (r evRecord) event() pipeline.Event {
	return pipeline.Event{ID: r.ID, Source: r.Source, ReceivedAt: r.ReceivedAt, Headers: r.Headers, Body: r.Body, Auth: r.Auth, DedupKey: r.DedupKey,
		TraceParent: r.TraceParent, TraceState: r.TraceState}
}

type qRecord struct {
	Event   evRecord `json:"event"`
	Route   string   `json:"route,omitempty"`
	Payload []byte   `json:"payload,omitempty"`
	lastErr string   // filled from the retry state when fetched
}

type dlqRecord struct {
	qRecord
	Seq      uint64    `json:"seq"`
	Attempts int       `json:"attempts"`
	Err      string    `json:"err"`
	FailedAt time.Time `json:"failed_at"`
}

type stRecord struct {
	Seq        uint64    `json:"seq"`
	Fails      int       `json:"fails"`
	Err        string    `json:"err,omitempty"`
	ReceivedAt time.Time `json:"received_at"`
	// ID is the event's id, and NotBefore when the entry is due (its nak
	// delay ends); both absent in records written before HastenRetries,
	// which then reads the event and the delivery record.
	ID        string    `json:"id,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain data types: cannot fail
	}
	return b
}

// Append writes the entries in one atomic batch: for each entry that is
// not a duplicate, its dedup marker (with an expected-last-subject-sequence
// of 0, so that two daemons cannot both write the same key), its event,
// one queue message per target and one dead letter per failed target. It
// returns after the batch's publish ack: stored on a quorum of replicas.
func (l *Log) Append(ctx context.Context, entries []pipeline.Entry) ([]pipeline.Appended, error) {
	if l.isClosed() {
		return nil, pipeline.ErrClosed
	}
	// Refuse a call too big for one batch before encoding anything: the
	// writer splits it and calls again.
	n := 0
	for _, e := range entries {
		n += 1 + len(e.Targets)
		if e.DedupKey != "" {
			n++
		}
	}
	if n > maxBatch {
		return nil, fmt.Errorf("jetstream: %d messages for %d entries, at most %d in one atomic batch: %w", n, len(entries), maxBatch, pipeline.ErrTooBig)
	}
	out := make([]pipeline.Appended, len(entries))
	// The first try does not look the dedup keys up: the batch's
	// expected-last-subject-sequence checks find a key that is already
	// stored, and fail the whole batch; then the keys are looked up and
	// the duplicates left out.
	for attempt := 0; ; attempt++ {
		msgs, err := l.build(ctx, entries, out, attempt > 0)
		if err != nil {
			return nil, err
		}
		if len(msgs) == 0 {
			return out, nil
		}
		if len(msgs) > maxBatch {
			return nil, fmt.Errorf("jetstream: %d messages for %d entries: %w", len(msgs), len(entries), pipeline.ErrTooBig)
		}
		err = l.publishBatch(ctx, msgs)
		if code := errCode(err); (code == 10071 || code == 10164) && attempt < 10 {
			// A dedup key is stored already, or another daemon is
			// writing it: look the markers up.
			if attempt > 0 {
				time.Sleep(time.Duration(attempt) * 5 * time.Millisecond)
			}
			continue
		}
		l.appended(ctx, err)
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}

// build decides which entries are duplicates (filling out) and returns the
// batch for the others.
func (l *Log) build(ctx context.Context, entries []pipeline.Entry, out []pipeline.Appended, lookup bool) ([]*nats.Msg, error) {
	// Look up the dedup markers of every keyed entry, concurrently.
	type mark struct {
		subj  string
		first string // id of the event that owns the key, "" when none
	}
	marks := make([]mark, len(entries))
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		lerr  error
		limit = make(chan struct{}, 32)
	)
	for i, e := range entries {
		if e.DedupKey == "" {
			continue
		}
		marks[i].subj = l.ddSubject(e.Event.Source, e.DedupKey)
		if !lookup {
			continue
		}
		wg.Go(func() {
			limit <- struct{}{}
			defer func() { <-limit }()
			rctx, cancel := l.reqCtx(ctx)
			defer cancel()
			m, err := l.stream.GetLastMsgForSubject(rctx, marks[i].subj)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return
			}
			if err != nil {
				mu.Lock()
				lerr = err
				mu.Unlock()
				return
			}
			marks[i].first = string(m.Data)
		})
	}
	wg.Wait()
	if lerr != nil {
		return nil, l.wrapErr("look up dedup keys", lerr)
	}
	inCall := make(map[string]string)
	var msgs []*nats.Msg
	for i, e := range entries {
		id := e.Event.ID
		if m := marks[i]; m.subj != "" {
			if first, ok := inCall[m.subj]; ok {
				out[i] = pipeline.Appended{ID: first, Duplicate: true}
				continue
			}
			if m.first != "" {
				out[i] = pipeline.Appended{ID: m.first, Duplicate: true}
				continue
			}
			inCall[m.subj] = id
			dd := nats.NewMsg(m.subj)
			dd.Header.Set(hdrExpSubj, "0")
			dd.Header.Set(hdrTTL, ttl(e.DedupWindow))
			dd.Data = []byte(id)
			msgs = append(msgs, dd)
		}
		out[i] = pipeline.Appended{ID: id}
		rec := toRecord(e.Event)
		if e.DedupKey != "" {
			rec.DedupKey = e.DedupKey
		}
		// The event is encoded once: the event message and every queue
		// message carry the same bytes; the sink list goes in a header.
		evJSON := mustJSON(rec)
		sinks := make([]string, len(e.Targets))
		for k, t := range e.Targets {
			sinks[k] = t.Sink
		}
		ev := nats.NewMsg(l.evSubject(id))
		ev.Data = evJSON
		if len(sinks) > 0 {
			ev.Header.Set(hdrSinks, string(mustJSON(sinks)))
		}
		if l.opts.Retention > 0 {
			ev.Header.Set(hdrTTL, ttl(l.opts.Retention))
		}
		setTraceHeaders(ev, &e.Event)
		msgs = append(msgs, ev)
		now := time.Now().UTC()
		for k, t := range e.Targets {
			var m *nats.Msg
			if t.Err != "" {
				m = nats.NewMsg(l.subj("dlq", token(t.Sink), token(id)))
				m.Data = mustJSON(dlqRecord{qRecord: qRecord{Event: rec, Route: t.Route, Payload: t.Payload}, Err: t.Err, FailedAt: now})
			} else {
				m = nats.NewMsg(l.subj("q", token(t.Sink), token(id)))
				m.Data = qJSON(evJSON, t.Route, t.Payload)
			}
			m.Header.Set(hdrOff, strconv.Itoa(k+1))
			setTraceHeaders(m, &e.Event)
			msgs = append(msgs, m)
		}
	}
	return msgs, nil
}

// setTraceHeaders puts the event's trace context on m as W3C headers, for
// tools that read a message's context from there; the record keeps it too.
func setTraceHeaders(m *nats.Msg, e *pipeline.Event) {
	if e.TraceParent != "" {
		m.Header.Set("traceparent", e.TraceParent)
		if e.TraceState != "" {
			m.Header.Set("tracestate", e.TraceState)
		}
	}
}

// qJSON encodes a qRecord around an event already encoded, without
// encoding (or, as json.RawMessage would, compacting) the event again.
func qJSON(evJSON []byte, route string, payload []byte) []byte {
	b := make([]byte, 0, len(evJSON)+len(route)+len(payload)*4/3+48)
	b = append(b, `{"event":`...)
	b = append(b, evJSON...)
	if route != "" {
		b = append(b, `,"route":`...)
		b = append(b, mustJSON(route)...)
	}
	if payload != nil {
		b = append(b, `,"payload":`...)
		b = append(b, mustJSON(payload)...)
	}
	return append(b, '}')
}

// ttl renders d for Nats-TTL: whole seconds, at least 1.
func ttl(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}

// apiError is an error answer of the JetStream API.
type apiError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("jetstream: %s (%d/%d)", e.Description, e.Code, e.ErrCode)
}

// publishBatch publishes msgs as one atomic batch (ADR-50) with
// jetstreamext.PublishMsgBatch, which numbers the messages, commits with
// the last one and checks the batch id and size in the server's answer.
// AckFirst (the library's default: wait for an answer to the first
// message before sending the rest) is off: against nats-server 2.15.2 it
// timed out ("batch message 1 ack failed: nats: timeout" in
// BenchmarkAppend), and it would cost a round trip per Append. The
// commit's answer says whether the whole batch was stored.
//
// "No responders" means the server the connection is on knew nobody to
// take the commit: a stream just created or a leader just elected whose
// interest has not reached this server yet. Nothing of the batch was
// stored then (no commit reached a leader), so the batch is sent again,
// under a new batch id, until the request's timeout, as jetstream's own
// PublishMsg does for one message.
//
// When no server has taken it by then, the error (which the writer logs)
// names the stream and says what "no responders" means.
func (l *Log) publishBatch(ctx context.Context, msgs []*nats.Msg) error {
	rctx, cancel := l.reqCtx(ctx)
	defer cancel()
	start := time.Now()
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 250*time.Millisecond) {
		_, err := jetstreamext.PublishMsgBatch(rctx, l.js, msgs, jetstreamext.BatchFlowControl{AckFirst: false})
		if err == nil {
			return nil
		}
		if !errors.Is(err, nats.ErrNoResponders) {
			return l.wrapErr("publish batch", err)
		}
		select {
		case <-rctx.Done():
			return l.wrapErr("publish batch", fmt.Errorf("no server took the batch in %v of tries (does stream %q exist, does it have a leader, that is a quorum of its replicas up, and does the server this daemon is connected to know it?): %w",
				time.Since(start).Round(time.Millisecond), l.opts.Stream, err))
		case <-time.After(wait):
		}
	}
}

// errCode is the JetStream API error code err carries, 0 when none.
func errCode(err error) int {
	if ae := (*apiError)(nil); errors.As(err, &ae) {
		return ae.ErrCode
	}
	if je := jetstream.JetStreamError(nil); errors.As(err, &je) && je.APIError() != nil {
		return int(je.APIError().ErrorCode)
	}
	return 0
}

// wrapErr maps server answers to the log's sentinels.
func (l *Log) wrapErr(op string, err error) error {
	if l.isClosed() || errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("jetstream: %s: %w", op, pipeline.ErrClosed)
	}
	if errors.Is(err, nats.ErrMaxPayload) {
		// One message is over the server's max_payload: the writer splits
		// the call until the entry that is too big fails alone.
		return fmt.Errorf("jetstream: %s: %w: %w", op, pipeline.ErrTooBig, err)
	}
	var ae *apiError
	if errors.As(err, &ae) {
		switch ae.ErrCode {
		case 10199, 10054: // batch too large, message too large
			return fmt.Errorf("jetstream: %s: %w: %w", op, pipeline.ErrTooBig, err)
		case 10023, 10002, 10047, 10028, 10077: // insufficient resources, account limits, max bytes, store failed
			return fmt.Errorf("jetstream: %s: %w: %w", op, pipeline.ErrFull, err)
		}
	}
	var je jetstream.JetStreamError
	if errors.As(err, &je) && je.APIError() != nil {
		switch je.APIError().ErrorCode {
		case 10199, 10054: // batch too large, message too large
			return fmt.Errorf("jetstream: %s: %w: %w", op, pipeline.ErrTooBig, err)
		case 10023, 10002, 10047, 10028, 10077:
			return fmt.Errorf("jetstream: %s: %w: %w", op, pipeline.ErrFull, err)
		}
	}
	return fmt.Errorf("jetstream: %s: %w", op, err)
}

// Event returns the event with the given id.
func (l *Log) Event(ctx context.Context, id string) (pipeline.Event, error) {
	if l.isClosed() {
		return pipeline.Event{}, pipeline.ErrClosed
	}
	if id == "" {
		return pipeline.Event{}, fmt.Errorf("event %q: %w", id, pipeline.ErrNotFound)
	}
	rctx, cancel := l.reqCtx(ctx)
	defer cancel()
	m, err := l.stream.GetLastMsgForSubject(rctx, l.evSubject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return pipeline.Event{}, fmt.Errorf("event %q: %w", id, pipeline.ErrNotFound)
	}
	if err != nil {
		return pipeline.Event{}, l.wrapErr("get event", err)
	}
	var r evRecord
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return pipeline.Event{}, fmt.Errorf("jetstream: event %q: %w", id, err)
	}
	return r.event(), nil
}

// getEvent reads the event stored at seq, or returns ErrNotFound.
func (l *Log) getEvent(ctx context.Context, seq uint64) (evRecord, error) {
	rctx, cancel := l.reqCtx(ctx)
	defer cancel()
	m, err := l.stream.GetMsg(rctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && !strings.HasPrefix(m.Subject, l.prefix+".ev.")) {
		return evRecord{}, fmt.Errorf("seq %d: %w", seq, pipeline.ErrNotFound)
	}
	if err != nil {
		return evRecord{}, l.wrapErr("get event", err)
	}
	var r evRecord
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return evRecord{}, fmt.Errorf("jetstream: event at seq %d: %w", seq, err)
	}
	return r, nil
}

// decodeEvent reads an event message: the event and its sinks.
func decodeEvent(m *jetstream.RawStreamMsg) (evRecord, []string, error) {
	var r evRecord
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return r, nil, fmt.Errorf("jetstream: event at seq %d: %w", m.Sequence, err)
	}
	var sinks []string
	if h := m.Header.Get(hdrSinks); h != "" {
		if err := json.Unmarshal([]byte(h), &sinks); err != nil {
			return r, nil, fmt.Errorf("jetstream: sinks of the event at seq %d: %w", m.Sequence, err)
		}
	}
	return r, sinks, nil
}

// scanLimit bounds the messages one Events call looks at.
const scanLimit = 1000

// Events lists events in log order. It reads the event messages one by
// one from the stream leader, looking at most at scanLimit per call.
func (l *Log) Events(ctx context.Context, f pipeline.EventFilter) ([]pipeline.EventInfo, string, error) {
	if l.isClosed() {
		return nil, "", pipeline.ErrClosed
	}
	if !pipeline.ValidFilterState(f.State) {
		return nil, "", fmt.Errorf("events: state %q: want queued, retrying, pending, delivered, dead or dropped", f.State)
	}
	var from uint64 = 1
	if f.After != "" {
		n, err := strconv.ParseUint(f.After, 10, 64)
		if err != nil {
			return nil, "", fmt.Errorf("cursor %q: %w", f.After, pipeline.ErrBadCursor)
		}
		from = n + 1
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	match := func(r evRecord, sinks []string) bool {
		switch {
		case f.Source != "" && r.Source != f.Source,
			f.DedupKey != "" && r.DedupKey != f.DedupKey,
			!f.Since.IsZero() && r.ReceivedAt.Before(f.Since),
			!f.Until.IsZero() && !r.ReceivedAt.Before(f.Until):
			return false
		case f.Sink != "":
			for _, s := range sinks {
				if s == f.Sink {
					return true
				}
			}
			return false
		}
		return true
	}
	if f.ID != "" {
		rctx, cancel := l.reqCtx(ctx)
		defer cancel()
		m, err := l.stream.GetLastMsgForSubject(rctx, l.evSubject(f.ID))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, "", nil
		}
		if err != nil {
			return nil, "", l.wrapErr("get event", err)
		}
		r, sinks, err := decodeEvent(m)
		if err != nil {
			return nil, "", err
		}
		if m.Sequence < from || !match(r, sinks) {
			return nil, "", nil
		}
		if ok, err := l.matchState(ctx, m.Sequence, r.ID, sinks, f.Sink, f.State); err != nil || !ok {
			return nil, "", err
		}
		return []pipeline.EventInfo{{Event: r.event(), Seq: m.Sequence, Sinks: sinks}}, "", nil
	}
	var out []pipeline.EventInfo
	filter := l.prefix + ".ev.>"
	seq := from
	for looked := 0; looked < scanLimit; looked++ {
		rctx, cancel := l.reqCtx(ctx)
		m, err := l.stream.GetMsg(rctx, seq, jetstream.WithGetMsgSubject(filter))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, "", nil
		}
		if err != nil {
			return nil, "", l.wrapErr("list events", err)
		}
		r, sinks, err := decodeEvent(m)
		if err != nil {
			return nil, "", err
		}
		ok := match(r, sinks)
		if ok && f.State != "" {
			if ok, err = l.matchState(ctx, m.Sequence, r.ID, sinks, f.Sink, f.State); err != nil {
				return nil, "", err
			}
		}
		if ok {
			out = append(out, pipeline.EventInfo{Event: r.event(), Seq: m.Sequence, Sinks: sinks})
			if len(out) == limit {
				return out, strconv.FormatUint(m.Sequence, 10), nil
			}
		}
		seq = m.Sequence + 1
	}
	return out, strconv.FormatUint(seq-1, 10), nil
}

// spawn runs f in a goroutine that Close waits for, unless the log is
// closed already; it reports whether it did.
func (l *Log) spawn(f func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.isClosed() {
		return false
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		f()
	}()
	return true
}

// Close naks what this process leased, so that other daemons (or the
// next start) get it at once, and closes the connection.
func (l *Log) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		close(l.closed) // under mu: spawn adds to wg only before this
		l.cancel()
		qs := make([]*queue, 0, len(l.queues))
		for _, q := range l.queues {
			qs = append(qs, q)
		}
		l.mu.Unlock()
		done := make(chan struct{})
		go func() { l.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(l.opts.Timeout):
		}
		for _, q := range qs {
			q.releaseAll()
		}
		_ = l.nc.Flush()
		l.nc.Close()
	})
	return nil
}
