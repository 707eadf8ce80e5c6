package pluginhost

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/protocol"
)

// Plugin is one running plugin process, started and configured by [Start].
// Its methods are safe for concurrent use; calls into the plugin are made
// one at a time, as the sdk promises sinks.
type Plugin struct {
	spec    Spec
	path    string
	opts    Options
	log     *slog.Logger
	client  *plugin.Client
	cmd     *exec.Cmd
	grpc    *plugin.GRPCClient
	sink    sdk.Sink
	pid     int
	version int
	stderr  *tailWriter

	desc      sdk.Description // set by Start when described is true
	described bool

	// sem serializes calls into the plugin (Deliver, Close); a channel
	// rather than a mutex so that waiting for it is bounded by a ctx.
	sem chan struct{}
	// timeouts counts the Deliver calls in a row that ran out of time
	// while the plugin answered its health check. Guarded by sem.
	timeouts int

	mu      sync.Mutex
	stopped bool
}

// Start finds spec's plugin binary (see [Find]), checks its checksum when
// spec.SHA256 is set, starts it with only the environment described in
// [EnvNames], performs the go-plugin handshake (gRPC, automatic mTLS),
// asks the sink for its description and, when it has one (see
// [sdk.Describer]), checks spec.Config against it with
// [sdk.Description.Check]: on any problem it stops the plugin without
// configuring it and returns every problem, naming the sink, wrapped with
// [ErrInvalidConfig]. Then it calls the sink's Configure with spec.Config.
// A plugin that does not describe itself, or was built before Describe
// existed, is configured directly.
//
// ctx limits Describe and Configure, and its deadline (when sooner than
// Options.StartTimeout) also limits the handshake. Every error names the
// sink and says what to do; a plugin built for a protocol version this host
// does not speak is refused with both versions named.
func Start(ctx context.Context, spec Spec, opts *Options) (*Plugin, error) {
	p, err := launch(ctx, spec, opts)
	if err != nil {
		return nil, err
	}
	config := spec.Config
	if len(strings.TrimSpace(string(config))) == 0 {
		config = []byte("{}")
	}
	desc, described, err := p.describe(ctx)
	if err != nil {
		p.client.Kill()
		return nil, withStderr(err, p.stderr)
	}
	if described {
		if problems := desc.Check(config); len(problems) > 0 {
			p.client.Kill()
			return nil, p.checkError(problems)
		}
	}
	if err := p.configure(ctx, config); err != nil {
		return nil, withStderr(err, p.stderr)
	}
	p.log.Debug("plugin started", "path", p.path, "pid", p.pid, "protocol_version", p.version, "described", described)
	return p, nil
}

// Describe starts spec's plugin as [Start] does, asks for its sink's
// description, and stops it; the plugin is not configured, so spec.Config
// may be empty. The error wraps [protocol.ErrNotDescribed] when the sink
// does not describe itself (or the plugin predates Describe).
func Describe(ctx context.Context, spec Spec, opts *Options) (sdk.Description, error) {
	p, err := launch(ctx, spec, opts)
	if err != nil {
		return sdk.Description{}, err
	}
	defer p.kill()
	desc, described, err := p.describe(ctx)
	if err != nil {
		return sdk.Description{}, err
	}
	if !described {
		return sdk.Description{}, fmt.Errorf("sink %q: plugin %s: %w", spec.Sink, p.path, protocol.ErrNotDescribed)
	}
	return desc, nil
}

// launch finds, checks and starts spec's plugin and dispenses its sink.
func launch(ctx context.Context, spec Spec, opts *Options) (*Plugin, error) {
	o := opts.withDefaults()
	log := o.Logger.With("sink", spec.Sink)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sink %q: start plugin: %w", spec.Sink, err)
	}
	path, err := Find(spec)
	if err != nil {
		return nil, err
	}
	env, refused, err := pluginEnv(spec.Config, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("sink %q: %w", spec.Sink, err)
	}
	for _, n := range refused {
		log.Warn("sink config names an environment variable that is never passed to plugins", "name", n)
	}
	var secure *plugin.SecureConfig
	if spec.SHA256 != "" {
		sum, err := pinnedSum(spec, path)
		if err != nil {
			return nil, err
		}
		secure = &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}

	startTimeout := o.StartTimeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < startTimeout {
		startTimeout = max(time.Until(d), time.Millisecond)
	}
	cmd := exec.Command(path)
	cmd.Dir = spec.Dir
	cmd.Env = env // go-plugin appends the magic cookie and PLUGIN_* to it
	cmd.SysProcAttr = procAttr()
	tail := &tailWriter{max: 2048}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  protocol.Handshake,
		VersionedPlugins: protocol.ClientPlugins(),
		Cmd:              cmd,
		SkipHostEnv:      true,
		SecureConfig:     secure,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     startTimeout,
		Logger:           newHCLogger(log, filepath.Base(path), tail),
		Stderr:           tail,
		Managed:          false,
	})
	p := &Plugin{
		spec:   spec,
		path:   path,
		opts:   o,
		log:    log,
		client: client,
		cmd:    cmd,
		stderr: tail,
		sem:    make(chan struct{}, 1),
	}
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, withStderr(p.startError(err), tail)
	}
	if cmd.Process != nil {
		p.pid = cmd.Process.Pid
	}
	p.version = client.NegotiatedVersion()
	p.grpc, _ = rpc.(*plugin.GRPCClient)
	raw, err := rpc.Dispense(protocol.PluginName)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("sink %q: plugin %s does not serve a sink: %w", spec.Sink, path, err)
	}
	sink, ok := raw.(sdk.Sink)
	if !ok {
		client.Kill()
		return nil, fmt.Errorf("sink %q: plugin %s dispensed %T, not a sink", spec.Sink, path, raw)
	}
	p.sink = sink
	return p, nil
}

// describe asks the plugin for its description. described is false, with a
// nil error, when the sink has none.
func (p *Plugin) describe(ctx context.Context) (desc sdk.Description, described bool, err error) {
	dc, ok := p.sink.(protocol.DescribeClient)
	if !ok {
		return sdk.Description{}, false, nil
	}
	dctx, cancel := context.WithTimeoutCause(ctx, p.opts.StartTimeout,
		fmt.Errorf("the plugin did not answer Describe within the start timeout (%v)", p.opts.StartTimeout))
	defer cancel()
	desc, err = dc.DescribeSink(dctx)
	switch {
	case errors.Is(err, protocol.ErrNotDescribed):
		return sdk.Description{}, false, nil
	case err != nil && dctx.Err() != nil:
		return sdk.Description{}, false, fmt.Errorf("sink %q: describe plugin %s: %w (%w)", p.spec.Sink, p.path, context.Cause(dctx), err)
	case err != nil:
		if !p.healthy(ctx) {
			return sdk.Description{}, false, exitedAtStart(fmt.Errorf("sink %q: plugin %s exited during Describe%s: %w", p.spec.Sink, p.path, p.stderr.lastLine(), err))
		}
		return sdk.Description{}, false, fmt.Errorf("sink %q: describe plugin %s: %w", p.spec.Sink, p.path, err)
	}
	p.desc, p.described = desc, true
	return desc, true, nil
}

// checkError reports the problems Check found in the sink's config.
func (p *Plugin) checkError(problems []error) error {
	head := fmt.Sprintf("sink %q: config does not fit plugin %s (fix the sink's config table", p.spec.Sink, p.path)
	if p.spec.Plugin != "" {
		head += fmt.Sprintf("; `pipelined plugins describe %s` lists its keys", p.spec.Plugin)
	}
	lines := make([]string, len(problems))
	for i, e := range problems {
		lines[i] = e.Error()
	}
	return &invalidConfigError{errors.New(p.problemList(head+")", lines))}
}

// problemList is head, with where the file has the sink's config table
// before it, and then a line for each problem, with where the file sets
// the key the problem names before it.
func (p *Plugin) problemList(head string, problems []string) string {
	var b strings.Builder
	b.WriteString(p.where(""))
	b.WriteString(head)
	b.WriteString(":")
	for _, l := range problems {
		b.WriteString("\n  - ")
		b.WriteString(p.where(configKeyOf(l)))
		b.WriteString(l)
	}
	return b.String()
}

// where is Spec.Where of key with ": " after it, or "".
func (p *Plugin) where(key string) string {
	if p.spec.Where == nil {
		return ""
	}
	if w := p.spec.Where(key); w != "" {
		return w + ": "
	}
	return ""
}

// keyInMessage finds the config key that a problem is about, as the sdk's
// checks and this repository's plugins name it: `config key "x"`, `x is a
// secret`, `x is required`.
var keyInMessage = regexp.MustCompile(`^(?:.*?\bconfig keys? "([^"]+)"|([A-Za-z0-9_]+) is (?:a secret|required))`)

// configKeyOf returns the config key msg is about ("name.sub" for a
// nested one), or "".
func configKeyOf(msg string) string {
	if m := keyInMessage.FindStringSubmatch(msg); m != nil {
		return m[1] + m[2]
	}
	return ""
}

// configure calls the sink's Configure; on error the plugin is killed.
func (p *Plugin) configure(ctx context.Context, config []byte) error {
	spec, path, o := p.spec, p.path, p.opts
	cctx, cancel := context.WithTimeoutCause(ctx, o.StartTimeout,
		fmt.Errorf("the plugin did not answer Configure within the start timeout (%v)", o.StartTimeout))
	err := p.sink.Configure(cctx, config)
	timedOut := err != nil && cctx.Err() != nil
	if timedOut {
		err = fmt.Errorf("%w (%w)", context.Cause(cctx), err)
	}
	cancel()
	if err == nil {
		return nil
	}
	alive := timedOut || p.healthy(ctx)
	p.client.Kill()
	switch {
	case timedOut:
		return fmt.Errorf("sink %q: configure plugin %s: %w", spec.Sink, path, err)
	case !alive:
		return exitedAtStart(fmt.Errorf("sink %q: plugin %s exited during Configure%s: %w", spec.Sink, path, p.stderr.lastLine(), err))
	}
	return &invalidConfigError{p.configureError(err)}
}

// configureError reports the error of a Configure that rejected the
// sink's config. Each line of it (a plugin may join several problems) is
// prefixed with where the file sets the key it names.
func (p *Plugin) configureError(err error) error {
	head := fmt.Sprintf("sink %q: plugin rejected its config (fix the sink's config table in the configuration file)", p.spec.Sink)
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	if len(lines) == 1 {
		return fmt.Errorf("%s%s: %w", p.where(configKeyOf(lines[0])), head, err)
	}
	return &wrapped{msg: p.problemList(head, lines), err: err}
}

// wrapped is err with another message.
type wrapped struct {
	msg string
	err error
}

func (e *wrapped) Error() string { return e.msg }
func (e *wrapped) Unwrap() error { return e.err }

// Description returns the sink's description, and false when the plugin
// does not describe itself.
func (p *Plugin) Description() (sdk.Description, bool) { return p.desc, p.described }

var incompatibleVersion = regexp.MustCompile(`incompatible API version with plugin\. Plugin version: (\d+)`)

// startError explains an error of go-plugin's Client (exec, checksum,
// handshake) for the operator.
func (p *Plugin) startError(err error) error {
	sink, path := p.spec.Sink, p.path
	msg := err.Error()
	switch {
	case errors.Is(err, plugin.ErrChecksumsDoNotMatch):
		got := "unknown"
		if sum, herr := fileSHA256(path); herr == nil {
			got = sum
		}
		return fmt.Errorf("sink %q: plugin binary %s has sha256 %s, but the sink's sha256 is %s: install the expected binary or update sha256: %w",
			sink, path, got, strings.ToLower(strings.TrimSpace(p.spec.SHA256)), err)
	case incompatibleVersion.MatchString(msg):
		theirs := incompatibleVersion.FindStringSubmatch(msg)[1]
		return fmt.Errorf("sink %q: plugin %s speaks sink protocol version %s, but this pipelined speaks %s: rebuild the plugin with an sdk of a matching version, or use a pipelined that speaks %s: %w",
			sink, path, theirs, hostVersions(), theirs, err)
	case strings.Contains(msg, "Failed to read any lines from plugin's stdout"):
		return exitedAtStart(fmt.Errorf("sink %q: plugin %s exited before the handshake%s (is it a pipelined sink plugin built with sdk.Serve?)",
			sink, path, p.stderr.lastLine()))
	case strings.Contains(msg, "Unrecognized remote plugin message"):
		return fmt.Errorf("sink %q: %s is not a pipelined sink plugin, or it printed to stdout before the handshake (plugins must log to stderr only)%s: %w",
			sink, path, p.stderr.lastLine(), err)
	case strings.Contains(msg, "timeout while waiting for plugin to start"):
		return fmt.Errorf("sink %q: plugin %s did not complete the handshake within %v: %w", sink, path, p.opts.StartTimeout, err)
	case strings.Contains(msg, "plugin exited before we could connect"):
		return exitedAtStart(fmt.Errorf("sink %q: plugin %s exited during start%s: %w", sink, path, p.stderr.lastLine(), err))
	case strings.Contains(msg, "unsupported plugin protocol"):
		return fmt.Errorf("sink %q: plugin %s speaks net/rpc, but sink plugins must serve gRPC (build it with sdk.Serve): %w", sink, path, err)
	}
	return fmt.Errorf("sink %q: start plugin %s: %w", sink, path, err)
}

// hostVersions lists the sink protocol versions this host speaks, "1" or
// "1 and 2".
func hostVersions() string {
	var vs []int
	for v := range protocol.ClientPlugins() {
		vs = append(vs, v)
	}
	slices.Sort(vs)
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = strconv.Itoa(v)
	}
	if len(s) <= 1 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// pinnedSum decodes spec's sha256, the checksum its plugin binary at path
// must have.
func pinnedSum(spec Spec, path string) ([]byte, error) {
	sum, err := hex.DecodeString(strings.TrimSpace(spec.SHA256))
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("sink %q: sha256 %q is not a hex SHA-256 checksum (64 hex digits; sha256sum %s prints it)", spec.Sink, spec.SHA256, path)
	}
	return sum, nil
}

// Verify finds spec's plugin binary ([Find]) and, when spec pins a
// sha256, checks the binary against it, without running it: what can be
// said of a plugin that is not started (`pipelined check --no-plugins`,
// the systemd unit's ExecStartPre). It returns the binary's path.
func Verify(spec Spec) (string, error) {
	path, err := Find(spec)
	if err != nil || spec.SHA256 == "" {
		return path, err
	}
	want, err := pinnedSum(spec, path)
	if err != nil {
		return "", err
	}
	got, err := fileSHA256(path)
	if err != nil {
		return "", fmt.Errorf("sink %q: plugin binary %s: %w", spec.Sink, path, err)
	}
	if got != hex.EncodeToString(want) {
		return "", fmt.Errorf("sink %q: plugin binary %s has sha256 %s, but the sink's sha256 is %s: install the expected binary or update sha256",
			spec.Sink, path, got, hex.EncodeToString(want))
	}
	return path, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Pid returns the process id of the plugin.
func (p *Plugin) Pid() int { return p.pid }

// Path returns the plugin binary that runs.
func (p *Plugin) Path() string { return p.path }

// ProtocolVersion returns the sink protocol version negotiated with the plugin.
func (p *Plugin) ProtocolVersion() int { return p.version }

// Exited reports whether the plugin process has exited.
func (p *Plugin) Exited() bool { return p.client.Exited() }

// Deliver sends batch to the plugin and returns its answer, one [sdk.Result]
// per event. A non-nil error means the whole batch failed: the sink said so
// (retry it with backoff), ctx expired, or the plugin process exited or
// stopped answering, in which case the error wraps [ErrPluginExited] and the
// Plugin is of no further use.
func (p *Plugin) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	if err := p.acquire(ctx); err != nil {
		return nil, fmt.Errorf("sink %q: deliver: %w", p.spec.Sink, err)
	}
	defer p.release()
	if p.isStopped() {
		return nil, fmt.Errorf("sink %q: deliver: %w", p.spec.Sink, ErrStopped)
	}
	if p.Exited() {
		return nil, p.exitedError(nil)
	}
	if len(batch) == 0 {
		return nil, nil
	}
	cctx := ctx
	if p.opts.CallTimeout > 0 {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeoutCause(ctx, p.opts.CallTimeout,
			fmt.Errorf("sink %q: plugin did not answer Deliver within call_timeout %v", p.spec.Sink, p.opts.CallTimeout))
		defer cancel()
	}
	results, err := p.sink.Deliver(cctx, batch)
	if err == nil {
		p.timeouts = 0
		return results, nil
	}
	// Out of time: the call's context ended, or its deadline passed and
	// the plugin's answer beat our own timer: a plugin that gives up with
	// its side of the deadline answers DEADLINE_EXCEEDED (this sdk), or
	// ABORTED (an older sdk, another language's).
	st, _ := status.FromError(err)
	outOfTime := cctx.Err() != nil || st.Code() == codes.DeadlineExceeded
	if dl, ok := cctx.Deadline(); ok && !time.Now().Before(dl) {
		outOfTime = true
	}
	cause := err
	if st.Code() == codes.DeadlineExceeded {
		cause = context.DeadlineExceeded
		if m := st.Message(); m != cause.Error() {
			cause = fmt.Errorf("%w: %s", cause, m) // with the sink's words
		}
	}
	if cctx.Err() != nil {
		cause = context.Cause(cctx) // the caller's deadline, or call_timeout
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil, fmt.Errorf("sink %q: deliver: %w", p.spec.Sink, cause) // called off: shutdown, reload
	}
	// The protocol client turns a sink's own batch error, a broken
	// transport and a call out of time alike into errors, so ask the
	// plugin whether it is still there, with time of its own: the call's
	// may be spent. One that does not answer is gone or frozen as a whole
	// (stopped, its threads all stuck), and only a new process will
	// deliver again; one that answers failed the batch or is slow, and the
	// batch is retried on it.
	if !p.healthy(context.WithoutCancel(ctx)) {
		return nil, p.exitedError(cause)
	}
	if !outOfTime {
		p.timeouts = 0
		return nil, fmt.Errorf("sink %q: deliver: %w", p.spec.Sink, cause)
	}
	// Out of time, though its health check answers: go-plugin serves that
	// on goroutines of its own, so a sink stuck in its own code (a
	// deadlock, a read that never returns) still answers it. Calls out of
	// time maxTimeouts times in a row restart it all the same.
	if p.timeouts++; p.timeouts >= maxTimeouts {
		return nil, fmt.Errorf("sink %q: plugin %s (pid %d) ran out of time on %d calls in a row, though it answers its health check: its sink looks stuck (last: %v): %w",
			p.spec.Sink, p.path, p.pid, p.timeouts, cause, ErrPluginExited)
	}
	return nil, fmt.Errorf("sink %q: deliver: %w", p.spec.Sink, cause)
}

// WrapUp asks the plugin to wrap up its Deliver call in flight, if any:
// the sink's ctx ends with [sdk.ErrWrapUp] and it answers at once for what
// it did, the rest not attempted; that answer is what the Deliver in
// flight returns. It does not wait for the Deliver. A plugin built before
// WrapUp existed does not know the call: WrapUp then does nothing (and
// logs it at debug level), and the Deliver goes on as before. ctx limits
// the call.
func (p *Plugin) WrapUp(ctx context.Context) error {
	wc, ok := p.sink.(protocol.WrapUpClient)
	if !ok || p.Exited() {
		return nil
	}
	n, err := wc.WrapUp(ctx)
	switch {
	case errors.Is(err, protocol.ErrNoWrapUp):
		p.log.Debug("plugin does not know WrapUp (built before it): its delivery in flight is waited for as before", "pid", p.pid)
		return nil
	case err != nil:
		return fmt.Errorf("sink %q: wrap up: %w", p.spec.Sink, err)
	}
	p.log.Debug("plugin asked to wrap up its deliveries in flight", "pid", p.pid, "calls", n)
	return nil
}

// maxTimeouts is how many Deliver calls in a row may run out of time on a
// plugin that answers its health check before it is restarted anyway.
const maxTimeouts = 3

// healthy reports whether the plugin process is running and answers go-plugin's
// health check within 2 s. When the check fails otherwise than by running
// out of time (a broken connection), it waits briefly for the process exit
// to be noticed, so that Exited agrees afterwards.
func (p *Plugin) healthy(ctx context.Context) bool {
	if p.Exited() {
		return false
	}
	if p.grpc != nil {
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := grpc_health_v1.NewHealthClient(p.grpc.Conn).Check(hctx,
			&grpc_health_v1.HealthCheckRequest{Service: plugin.GRPCServiceName})
		cancel()
		if err == nil {
			return true
		}
		if status.Code(err) == codes.DeadlineExceeded {
			return false // alive and silent: it will not exit on its own
		}
	}
	deadline := time.Now().Add(time.Second)
	for !p.Exited() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func (p *Plugin) exitedError(cause error) error {
	what := "exited"
	if !p.Exited() {
		what = "stopped answering"
	} else if st := p.stderr.exitStatus(); st != "" { // known once Exited: go-plugin logs it first
		what = "exited (" + st + ")"
	}
	if cause != nil {
		return fmt.Errorf("sink %q: plugin %s (pid %d) %s during the call (%v)%s: %w",
			p.spec.Sink, p.path, p.pid, what, cause, p.stderr.lastLine(), ErrPluginExited)
	}
	return fmt.Errorf("sink %q: plugin %s (pid %d) %s%s: %w", p.spec.Sink, p.path, p.pid, what, p.stderr.lastLine(), ErrPluginExited)
}

// Stop asks the plugin to flush and release what it holds (its Close, when
// the sink implements sdk.Closer), bounded by ctx (or Options.CloseTimeout
// when ctx has no deadline), then ends the process: gracefully, or with
// SIGKILL after 2s or once ctx has expired. It waits for an in-flight
// Deliver to return first, unless ctx expires. Stop returns the error of
// Close, if any, wrapping [ErrKilled] too when ctx expired and the process
// was killed; calling it again returns nil.
func (p *Plugin) Stop(ctx context.Context) error {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return nil
	}
	p.stopped = true
	p.mu.Unlock()

	var err error
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, p.opts.CloseTimeout,
			fmt.Errorf("sink %q: plugin did not finish Close within %v", p.spec.Sink, p.opts.CloseTimeout))
		defer cancel()
	}
	if aerr := p.acquire(ctx); aerr != nil {
		err = fmt.Errorf("sink %q: stop plugin while a delivery is in flight: %w", p.spec.Sink, context.Cause(ctx))
	} else {
		if c, ok := p.sink.(sdk.Closer); ok && !p.Exited() {
			if cerr := c.Close(ctx); cerr != nil {
				if expired(ctx) {
					cerr = fmt.Errorf("%w (%w)", context.Cause(ctx), cerr)
				}
				err = fmt.Errorf("sink %q: close plugin: %w", p.spec.Sink, cerr)
			}
		}
		defer p.release()
	}
	if expired(ctx) && p.hardKill() {
		err = p.killedError(cmp.Or(err, context.Cause(ctx)))
	}
	p.client.Kill()
	return err
}

// expired reports whether ctx has ended, waiting for it to end once its
// deadline has passed: gRPC answers DEADLINE_EXCEEDED from a timer of its
// own, which can fire an instant before ctx's.
func expired(ctx context.Context) bool {
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		<-ctx.Done()
	}
	return ctx.Err() != nil
}

// killedError is err, of a stop that ended with a kill, wrapping
// [ErrKilled] too.
func (p *Plugin) killedError(err error) error {
	return fmt.Errorf("%w; plugin (pid %d) %w", err, p.pid, ErrKilled)
}

// kill ends the process at once, without Close: for a plugin that already
// failed.
func (p *Plugin) kill() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.hardKill()
	p.client.Kill()
}

// hardKill sends SIGKILL to a process that has not exited, and reports
// whether it did.
func (p *Plugin) hardKill() bool {
	if p.cmd.Process != nil && !p.Exited() {
		return p.cmd.Process.Kill() == nil
	}
	return false
}

func (p *Plugin) isStopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped
}

func (p *Plugin) acquire(ctx context.Context) error {
	select {
	case p.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (p *Plugin) release() { <-p.sem }

// tailWriter keeps the end of the plugin's stderr, so that an error about a
// plugin that died can quote its last words, and the line of a Go panic or
// fatal error, whose stack would push it out of the end.
type tailWriter struct {
	mu    sync.Mutex
	max   int
	buf   []byte
	line  []byte // the line being written, up to maxLine bytes
	fatal string // the last "panic: " or "fatal error: " line
	exit  string // how the process ended, as go-plugin logs it ("signal: killed"); "" until then
}

// exited records how the process ended (go-plugin's "plugin process
// exited" line carries it; see slogSink).
func (w *tailWriter) exited(status string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.exit = status
}

// exitStatus returns how the process ended, "" when not known (yet).
func (w *tailWriter) exitStatus() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.exit
}

// maxLine bounds a line that last and the fatal line quote.
const maxLine = 300

func (w *tailWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	if over := len(w.buf) - w.max; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
	}
	for rest := b; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			w.line = append(w.line, rest[:min(len(rest), maxLine+1-len(w.line))]...)
			break
		}
		w.line = append(w.line, rest[:min(i, maxLine+1-len(w.line))]...)
		if l := string(w.line); strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") {
			w.fatal = clip(strings.TrimSpace(l))
		}
		w.line, rest = w.line[:0], rest[i+1:]
	}
	return len(b), nil
}

// clip cuts l to maxLine bytes.
func clip(l string) string {
	if len(l) > maxLine {
		return l[:maxLine] + "..."
	}
	return l
}

// lastLine returns `; its last stderr line: "..."` with the line last
// picks (a panic's, else the last), or "".
func (w *tailWriter) lastLine() string {
	if l := w.last(); l != "" {
		return fmt.Sprintf("; its last stderr line: %q", l)
	}
	return ""
}

// last returns the line of the plugin's panic or fatal error, if it wrote
// one, else the last non-empty line written that is not go-plugin's own
// debug chatter, at most maxLine bytes, or "".
func (w *tailWriter) last() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fatal != "" {
		return w.fatal
	}
	lines := strings.Split(strings.TrimSpace(string(w.buf)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" {
			continue
		}
		text, level := readable(l)
		if level == "debug" || level == "trace" {
			continue // go-plugin's own chatter ("plugin address") says nothing useful
		}
		return clip(text)
	}
	return ""
}

// readable returns a log line of the plugin as an operator reads it, and
// its level: a JSON line of the SDK's logger (hclog: @level, @message,
// then its attributes) as `[info] message key=value ...`, attributes by
// name; any other line as it is, with level "".
func readable(l string) (text, level string) {
	var entry map[string]any
	if !strings.HasPrefix(l, "{") || json.Unmarshal([]byte(l), &entry) != nil {
		return l, ""
	}
	level, _ = entry["@level"].(string)
	msg, ok := entry["@message"].(string)
	if !ok {
		return l, level
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[%s] %s", level, msg)
	for _, k := range slices.Sorted(maps.Keys(entry)) {
		if !strings.HasPrefix(k, "@") {
			fmt.Fprintf(&b, " %s=%v", k, entry[k])
		}
	}
	return b.String(), level
}

// stderrError is an error of a plugin that failed to start, with the last
// line the plugin wrote to stderr (see [stderrLine]).
type stderrError struct {
	err  error
	line string
}

func (e *stderrError) Error() string { return e.err.Error() }
func (e *stderrError) Unwrap() error { return e.err }

// withStderr attaches the last line of tail to err.
func withStderr(err error, tail *tailWriter) error {
	if l := tail.last(); l != "" {
		return &stderrError{err: err, line: l}
	}
	return err
}

// stderrLine returns the plugin's last stderr line carried by err, or "".
func stderrLine(err error) string {
	var se *stderrError
	if errors.As(err, &se) {
		return se.line
	}
	return ""
}
