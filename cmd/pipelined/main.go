// Command pipelined receives webhooks, keeps every event in a durable log,
// routes each event with rules and delivers it to sink plugins.
//
//	pipelined serve  [-c pipeline.toml]   run the daemon
//	pipelined check  [-c pipeline.toml]   validate the config, compile rules, start and configure every plugin
//	pipelined version                     print the version
//
// Without -c, pipelined reads ./pipeline.toml, or the built-in default
// configuration when there is none.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/pipelined/pipelined"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/daemon"
	"github.com/pipelined/pipelined/pipeline/pluginhost"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: pipelined <command> [flags]

commands:
  serve    run the daemon
  check    validate the configuration, compile its rules, start and configure every plugin
  version  print the version

flags of serve and check:
  -c FILE           configuration file (default ./pipeline.toml, else the built-in default)
  -log-format F     text or json (default text)
  -log-level L      debug, info, warn or error (default info)
`

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
		return serve(args[1:], stderr)
	case "check":
		return check(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "pipelined", buildVersion())
		return 0
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
}

func parseFlags(name string, args []string, stderr io.Writer) (*common, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &common{}
	fs.StringVar(&c.config, "c", "", "configuration `file`")
	fs.StringVar(&c.config, "config", "", "configuration `file` (same as -c)")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("pipelined %s: unexpected argument %q", name, fs.Arg(0))
	}
	return c, nil
}

func (c *common) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", c.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: want text or json", c.logFormat)
}

// load reads the configuration: -c FILE, else ./pipeline.toml, else the
// built-in default.
func (c *common) load(log *slog.Logger) (*config.Config, error) {
	if c.config != "" {
		return config.Load(c.config)
	}
	if _, err := os.Stat("pipeline.toml"); err == nil {
		return config.Load("pipeline.toml")
	}
	log.Info("no -c given and no ./pipeline.toml: using the built-in default configuration")
	return config.Parse("pipeline.toml (built in)", pipelined.DefaultConfig)
}

func serve(args []string, stderr io.Writer) int {
	c, err := parseFlags("serve", args, stderr)
	if err != nil {
		return 2
	}
	log, err := c.logger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "pipelined serve:", err)
		return 2
	}
	cfg, err := c.load(log)
	if err != nil {
		fmt.Fprintf(stderr, "pipelined serve: configuration is invalid:\n%v\n", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			log.Warn("SIGHUP received: reloading is not supported by this version yet; restart pipelined to apply a new configuration")
		}
	}()

	log.Info("starting pipelined", "version", buildVersion(), "config", cfg.File)
	if err := daemon.New(cfg, &daemon.Options{Logger: log}).Run(ctx); err != nil {
		log.Error("pipelined stopped", "err", err)
		return 1
	}
	log.Info("pipelined stopped")
	return 0
}

func check(args []string, stdout, stderr io.Writer) int {
	c, err := parseFlags("check", args, stderr)
	if err != nil {
		return 2
	}
	log, err := c.logger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "pipelined check:", err)
		return 2
	}
	cfg, err := c.load(log)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	var problems []error
	if _, err := daemon.Compile(cfg); err != nil {
		problems = append(problems, err)
	}
	specs, err := daemon.PluginSpecs(cfg)
	if err != nil {
		problems = append(problems, err)
	}
	for _, spec := range specs {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		p, err := pluginhost.Start(ctx, spec, &pluginhost.Options{Logger: log})
		if err != nil {
			problems = append(problems, err)
		} else {
			fmt.Fprintf(stdout, "sink %s: plugin %s answered (protocol %d)\n", spec.Sink, p.Path(), p.ProtocolVersion())
			p.Stop(ctx)
		}
		cancel()
	}
	if len(problems) > 0 {
		fmt.Fprintln(stderr, errors.Join(problems...))
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%d sources, %d sinks, %d routes)\n", cfg.File, len(cfg.Sources), len(cfg.Sinks), len(cfg.Routes))
	return 0
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}
