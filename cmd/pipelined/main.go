// Command pipelined receives webhooks, keeps every event in a durable log,
// routes each event with rules and delivers it to sink plugins.
//
//	pipelined serve  [-c pipeline.toml]   run the daemon (SIGTERM/SIGINT stop it cleanly, SIGHUP reloads)
//	pipelined check  [-c pipeline.toml] [--no-plugins]
//	                                      validate the config, compile rules, start, check and configure every plugin
//	pipelined test   [-c FILE] [-v] [-run REGEXP] [FILES...]
//	                                      run the rule test cases (*_test.toml next to the config)
//	pipelined plugins list [-c FILE]      list the plugin binaries found and their summaries
//	pipelined plugins describe NAME [-c FILE] [--json]
//	                                      print the config keys a plugin takes
//	pipelined version [--json]            print the version
//
// These talk to a running daemon's admin API ([admin] listen of -c, or
// --admin URL; --json prints the API's JSON):
//
//	pipelined sinks                       state, queue depth, oldest age, DLQ size and last error per sink
//	pipelined events list [--source S] [--sink S] [--since T] [--until T] [--dedup-key K] [--when EXPR] [--newest] [--rejected]
//	pipelined events show ID              one event: headers, body and what verified it
//	pipelined dlq list SINK               the dead letters of a sink, with their last error
//	pipelined dlq retry|drop SINK (--all | --id ID ...)
//	pipelined replay --sink S --since D [--until T] [--when EXPR]
//	                                      re-enqueue events of the log to a sink, with progress
//	pipelined reload                      read the configuration again, as SIGHUP does
//
// check exits 0 when all is well, 78 (EX_CONFIG) when the configuration is
// wrong (it prints every problem; serve exits 78 too when it cannot start
// for that reason), 1 when something else failed (a plugin that crashed),
// 2 on a usage error. serve exits 0 after a clean stop, and 75
// (EX_TEMPFAIL) after a stop that gave up on an event log that did not
// commit or close in time (nothing acknowledged is lost: see
// [daemon.ErrUncleanStop]).
//
// Without -c, pipelined reads ./pipeline.toml, or the built-in default
// configuration when there is none.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/pipelined/pipelined"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/daemon"
	"github.com/pipelined/pipelined/pipeline/pluginhost"
)

// version, commit and date are set at build time with -ldflags "-X
// main.version=... -X main.commit=... -X main.date=..." (make build does);
// a plain go build or go install takes them from the module's build info.
var (
	version = "dev"
	commit  = ""
	date    = ""
)

const usage = `usage: pipelined <command> [flags]

commands:
  serve    run the daemon
  check    validate the configuration, compile its rules, start, check and configure every plugin
  plugins  list the plugins found, or describe the config keys of one (pipelined plugins help)
  test     run the rule test cases next to the configuration (pipelined test -h)
  events   list or show events of the log (pipelined events --help)
  sinks    show each sink: state, breaker, paused, queue, oldest waiting event, DLQ, last error;
           sinks pause|resume SINK holds or releases its delivery
  dlq      list, retry or drop a sink's dead letters
  replay   re-enqueue a range of the log to a sink
  reload   make the running daemon reload its configuration
  version  print the version (--json for scripts)

Each command's -h prints its usage.

flags of serve and check:
  -c FILE           configuration file (default ./pipeline.toml, else the built-in default)
  -log-format F     auto, text or json (default auto: text, without the
                    time and with priorities when stderr is the journal)
  -log-level L      debug, info, warn or error (default info)
  -no-plugins       (check only) do not start the plugins (find their binaries only)

serve and check exit 78 (EX_CONFIG) when the configuration is wrong, 1
when something else failed; serve exits 75 (EX_TEMPFAIL) after a stop that
gave up on an event log that did not commit or close in time. Each
command's -h prints its own usage.
`

// commandUsage is the usage of serve and check, before their flags.
var commandUsage = map[string]string{
	"serve": `usage: pipelined serve [-c FILE] [-log-format F] [-log-level L]

Runs the daemon: opens the event log, starts every sink's plugin, binds the
ingest and admin listeners (or takes them from systemd: socket units with
FileDescriptorName=ingest and admin, see examples/systemd). SIGHUP reloads the configuration, SIGTERM drains
and stops. Without -c it reads ./pipeline.toml, else the built-in default.
Relative paths in the file resolve against the file's directory.
Exit status: 0 stopped cleanly, 78 (EX_CONFIG) the configuration is wrong
(restarting will not help), 1 something else failed (for example the event
log stopped writing after a failed write, which a restart heals), 2 usage
error.
`,
	"check": `usage: pipelined check [-c FILE] [--no-plugins] [-log-format F] [-log-level L]

Validates the configuration, compiles its rules, schemas and auth checks,
then starts, checks and configures every sink's plugin, as serve would.
With --no-plugins it only finds each plugin's binary and checks its
sha256 when the sink pins one, and warns (exit 0) when it cannot.
Exit status: 0 ok, 78 (EX_CONFIG) the configuration is wrong, 1 something
else failed (a plugin that crashed), 2 usage error.
`,
}

// exitConfig is the exit code of a configuration error (EX_CONFIG in
// sysexits.h): systemd and scripts can tell it from a crash.
const exitConfig = 78

// exitUncleanStop is the exit code of a stop that gave up on the event log
// ([daemon.ErrUncleanStop]): 75, EX_TEMPFAIL in sysexits.h ("try again
// later": what was not committed is sent again by its senders, what was is
// replayed at the next start). Not 0, so that systemd records the stop as
// failed (Result=exit-code, OnFailure= runs, `systemctl --failed` lists
// it) and Restart=on-failure starts the daemon again when the stop was not
// asked for; not 78, which RestartPreventExitStatus= keeps from restarting;
// not 1, which stands for a daemon that could not start or crashed.
const exitUncleanStop = 75

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stdout, stderr)
	case "check":
		return check(args[1:], stdout, stderr)
	case "plugins":
		return plugins(args[1:], stdout, stderr)
	case "test":
		return testCmd(args[1:], stdout, stderr)
	case "events", "sinks", "dlq", "replay", "reload":
		return adminCLI(args[0], args[1:], stdout, stderr)
	case "version", "-version", "--version":
		return versionCmd(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "pipelined: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// common holds the flags of serve and check.
type common struct {
	config    string
	logFormat string
	logLevel  string
	noPlugins bool // check only
}

// parseFlags parses the flags of serve or check. With -h it prints the
// command's usage on stdout and returns [flag.ErrHelp] (exit 0); a bad
// flag is reported on stderr (exit 2).
func parseFlags(name string, args []string, stdout, stderr io.Writer) (*common, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	c := &common{}
	fs.StringVar(&c.config, "c", "", "configuration `file`")
	fs.StringVar(&c.config, "config", "", "configuration `file` (same as -c)")
	fs.StringVar(&c.logFormat, "log-format", "auto", "log format: auto, text or json (auto: text, without the time under journald)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	if name == "check" {
		fs.BoolVar(&c.noPlugins, "no-plugins", false, "do not start the plugins (find their binaries and check their sha256 only)")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, commandUsage[name], "\nflags:\n")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return nil, err
		}
		fmt.Fprintf(stderr, "run pipelined %s -h for usage\n", name)
		return nil, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "pipelined %s: unexpected argument %q\nrun pipelined %s -h for usage\n", name, fs.Arg(0), name)
		return nil, fmt.Errorf("pipelined %s: unexpected argument %q", name, fs.Arg(0))
	}
	return c, nil
}

// exitFlags is the exit status of a flag error: 0 for -h, else 2.
func exitFlags(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

func (c *common) logger(w io.Writer) (*slog.Logger, error) {
	return newLogger(w, c.logFormat, c.logLevel)
}

// load reads the configuration: -c FILE, else ./pipeline.toml, else the
// built-in default.
func (c *common) load(log *slog.Logger) (*config.Config, error) {
	return c.loadWith(log, config.ParseOptions{})
}

// loadWith is load with parse options (Files is set for the built-in
// default).
func (c *common) loadWith(log *slog.Logger, o config.ParseOptions) (*config.Config, error) {
	if c.config != "" {
		return config.LoadWith(c.config, &o)
	}
	if _, err := os.Stat("pipeline.toml"); err == nil {
		return config.LoadWith("pipeline.toml", &o)
	}
	log.Info("no -c given and no ./pipeline.toml: using the built-in default configuration")
	o.Files = pipelined.DefaultFiles
	return config.ParseWith("pipeline.toml (built in)", pipelined.DefaultConfig, &o)
}

// exitStatus is serve's exit status after Run returned err: 78 when
// restarting will not help (a sink's config or plugin name is wrong, the
// socket units do not fit the file), 75 after a stop that gave up on the
// event log, 1 otherwise (an event log that stopped writing among them,
// which a restart heals: Restart=on-failure must start it again).
func exitStatus(err error) int {
	switch {
	case errors.Is(err, daemon.ErrUncleanStop):
		return exitUncleanStop
	case errors.Is(err, pluginhost.ErrInvalidConfig), errors.Is(err, pluginhost.ErrNotFound),
		errors.Is(err, daemon.ErrSocketActivation):
		return exitConfig
	}
	return 1
}

func serve(args []string, stdout, stderr io.Writer) int {
	c, err := parseFlags("serve", args, stdout, stderr)
	if err != nil {
		return exitFlags(err)
	}
	// The log, and all else serve writes to stderr, in order, through one
	// writeBehind: see there.
	out := newWriteBehind(stderr)
	defer out.Close()
	stderr = out
	log, err := c.logger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "pipelined serve:", err)
		return 2
	}
	cfg, err := c.load(log)
	if err != nil {
		fmt.Fprintf(stderr, "pipelined serve: configuration is invalid:\n%v\n", err)
		return exitConfig
	}

	if err := daemon.Harden(); err != nil {
		log.Warn("process hardening incomplete", "err", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	b := build()
	d := daemon.New(cfg, &daemon.Options{
		Logger: log,
		Build:  b,
		Load:   func() (*config.Config, error) { return c.load(log) },
	})
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			log.Info("SIGHUP received: reloading the configuration")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			d.Reload(ctx) // logs the outcome
			cancel()
		}
	}()

	log.Info("starting pipelined", "version", b.Version, "commit", b.Commit, "config", cfg.File)
	if err := d.Run(ctx); err != nil {
		status := exitStatus(err)
		if status == exitUncleanStop {
			// The daemon said what it gave up on and why nothing
			// acknowledged is lost; the status tells systemd.
			log.Warn("pipelined stopped, not cleanly", "exit_status", status, "err", err)
		} else {
			log.Error("pipelined stopped", "exit_status", status, "err", err)
		}
		return status
	}
	log.Info("pipelined stopped")
	return 0
}

func check(args []string, stdout, stderr io.Writer) int {
	c, err := parseFlags("check", args, stdout, stderr)
	if err != nil {
		return exitFlags(err)
	}
	log, err := c.logger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "pipelined check:", err)
		return 2
	}
	// Loading checks the configuration and compiles its rules, schemas and
	// auth checks, once: what serve would run.
	cfg, err := c.load(log)
	if err != nil {
		// A problem in the file is file:line: what, as linters print
		// it; a file that cannot be read at all is the command's error.
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Path == cmp.Or(c.config, "pipeline.toml") {
			fmt.Fprintln(stderr, "pipelined check:", err)
		} else {
			fmt.Fprintln(stderr, err)
		}
		return exitConfig
	}
	// configProblems are wrong in the configuration; others are failures
	// of something else (a plugin that crashed).
	var configProblems, others []error
	specs, err := daemon.PluginSpecs(cfg)
	if err != nil {
		configProblems = append(configProblems, err)
	}
	if c.noPlugins {
		// Not started; but a binary that is missing, or not the one
		// pinned, would fail the start: say so now. A warning, not a
		// failure: --no-plugins also lints a file where the plugins are
		// not installed (a CI job).
		for _, spec := range specs {
			path, err := pluginhost.Verify(spec)
			if err != nil {
				fmt.Fprintf(stderr, "warning: %v (serve would refuse to start)\n", err)
				continue
			}
			pinned := "no sha256 pinned"
			if spec.SHA256 != "" {
				pinned = "sha256 matches"
			}
			fmt.Fprintf(stdout, "sink %s: plugin %s found, not started (%s)\n", spec.Sink, path, pinned)
		}
		specs = nil
	}
	for _, spec := range specs {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		p, err := pluginhost.Start(ctx, spec, &pluginhost.Options{Logger: log})
		switch {
		case errors.Is(err, pluginhost.ErrInvalidConfig), errors.Is(err, pluginhost.ErrNotFound):
			configProblems = append(configProblems, err)
		case err != nil:
			others = append(others, err)
		default:
			described := "its config was not checked: the plugin does not describe it"
			if _, ok := p.Description(); ok {
				described = "config checked against its description"
			}
			fmt.Fprintf(stdout, "sink %s: plugin %s answered (protocol %d), %s\n", spec.Sink, p.Path(), p.ProtocolVersion(), described)
			p.Stop(ctx)
		}
		cancel()
	}
	if problems := append(configProblems, others...); len(problems) > 0 {
		fmt.Fprintln(stderr, errors.Join(problems...))
		if len(configProblems) > 0 {
			return exitConfig
		}
		return 1
	}
	skipped := ""
	if c.noPlugins {
		skipped = ", plugins not started"
	}
	fmt.Fprintf(stdout, "%s: ok (%d sources, %d sinks, %d routes%s)\n", cfg.File, len(cfg.Sources), len(cfg.Sinks), len(cfg.Routes), skipped)
	return 0
}

// versionCmd prints the version, commit, build date and Go version; with
// --json, an object for scripts: {"version", "commit", "date", "go", "os",
// "arch"}.
func versionCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, "usage: pipelined version [--json]\n\nPrints the version, VCS commit, build date and Go version of pipelined;\n--json prints {\"version\", \"commit\", \"date\", \"go\", \"os\", \"arch\"}.\n")
			return 0
		}
		fmt.Fprintln(stderr, "usage: pipelined version [--json]")
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "pipelined version: unexpected argument %q\nusage: pipelined version [--json]\n", fs.Arg(0))
		return 2
	}
	b := build()
	if !*asJSON {
		fmt.Fprintf(stdout, "pipelined %s (commit %s, built %s, %s %s/%s)\n", b.Version, or(b.Commit, "unknown"), or(b.Date, "unknown"), b.Go, runtime.GOOS, runtime.GOARCH)
		return 0
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	enc.Encode(struct {
		Version string `json:"version"`
		Commit  string `json:"commit"`
		Date    string `json:"date"`
		Go      string `json:"go"`
		OS      string `json:"os"`
		Arch    string `json:"arch"`
	}{b.Version, b.Commit, b.Date, b.Go, runtime.GOOS, runtime.GOARCH})
	return 0
}

// build says which build this is: the linker flags first, then what the
// go command recorded (the module version of a go install, the VCS
// revision and time of a build in a checkout, "+dirty" when it had
// uncommitted changes).
func build() daemon.Build {
	b := daemon.Build{Version: version, Commit: commit, Date: date, Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if b.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		b.Version = bi.Main.Version
	}
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if b.Commit == "" {
				b.Commit = s.Value
			}
		case "vcs.time":
			if b.Date == "" {
				b.Date = s.Value
			}
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && commit == "" && b.Commit != "" {
		b.Commit += "+dirty"
	}
	return b
}

func or(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}
