package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/pluginhost"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/protocol"
)

const pluginsUsage = `usage:
  pipelined plugins list [-c FILE]                    list the plugin binaries found and their summaries
  pipelined plugins describe NAME [-c FILE] [--json]  print the config keys plugin NAME takes

Plugins are found next to the pipelined executable, then in the [plugins]
dirs of the configuration given with -c.
`

// describeTimeout bounds starting one plugin and asking for its description.
const describeTimeout = 15 * time.Second

func plugins(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, pluginsUsage)
		return 2
	}
	switch args[0] {
	case "list":
		return pluginsList(args[1:], stdout, stderr)
	case "describe":
		return pluginsDescribe(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, pluginsUsage)
		return 0
	}
	fmt.Fprintf(stderr, "pipelined plugins: unknown command %q\n\n%s", args[0], pluginsUsage)
	return 2
}

// pluginsFlags parses the flags of a plugins subcommand, before and after
// its positional arguments, and returns those.
func pluginsFlags(name string, args []string, stdout, stderr io.Writer, asJSON *bool) (cfgFile string, pos []string, err error) {
	fs := flag.NewFlagSet("plugins "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	fs.StringVar(&cfgFile, "c", "", "configuration `file` whose [plugins] dirs are searched too")
	fs.StringVar(&cfgFile, "config", "", "configuration `file` (same as -c)")
	if asJSON != nil {
		fs.BoolVar(asJSON, "json", false, "print JSON")
	}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				for _, line := range strings.Split(pluginsUsage, "\n") {
					if strings.HasPrefix(line, "  pipelined plugins "+name) {
						fmt.Fprintf(stdout, "usage:\n%s\n\nflags:\n", line)
					}
				}
				fs.SetOutput(stdout)
				fs.PrintDefaults()
			} else {
				fmt.Fprintf(stderr, "run pipelined plugins %s -h for usage\n", name)
			}
			return "", nil, err
		}
		if fs.NArg() == 0 {
			return cfgFile, pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// pluginDirs returns where plugins are searched: next to the executable,
// then the [plugins] dirs of cfgFile when given.
func pluginDirs(cfgFile string) ([]string, error) {
	var extra []string
	if cfgFile != "" {
		cfg, err := config.Load(cfgFile)
		if err != nil {
			return nil, err
		}
		extra = cfg.Plugins.Dirs
	}
	return pluginhost.SearchDirs(extra), nil
}

func pluginsList(args []string, stdout, stderr io.Writer) int {
	cfgFile, pos, err := pluginsFlags("list", args, stdout, stderr, nil)
	if err != nil {
		return exitFlags(err)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "pipelined plugins list: unexpected argument %q\n", pos[0])
		return 2
	}
	dirs, err := pluginDirs(cfgFile)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	found := pluginhost.List(dirs)
	if len(found) == 0 {
		fmt.Fprintf(stderr, "no plugins (%s<name>) found in %s\n", pluginhost.BinaryPrefix, strings.Join(dirs, ", "))
		return 1
	}
	names := make([]string, 0, len(found))
	for n := range found {
		names = append(names, n)
	}
	slices.Sort(names)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPATH\tSUMMARY")
	code := 0
	for _, n := range names {
		summary := ""
		ctx, cancel := context.WithTimeout(context.Background(), describeTimeout)
		d, err := pluginhost.Describe(ctx, pluginhost.Spec{Sink: n, Command: found[n]}, quietOptions())
		cancel()
		switch {
		case errors.Is(err, protocol.ErrNotDescribed):
			summary = "(does not describe itself)"
		case err != nil:
			summary = "(does not start: see below)"
			fmt.Fprintln(stderr, err)
			code = 1
		default:
			summary = d.Summary
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", n, found[n], summary)
	}
	tw.Flush()
	return code
}

func pluginsDescribe(args []string, stdout, stderr io.Writer) int {
	var asJSON bool
	cfgFile, pos, err := pluginsFlags("describe", args, stdout, stderr, &asJSON)
	if err != nil {
		return exitFlags(err)
	}
	if len(pos) != 1 {
		fmt.Fprint(stderr, "pipelined plugins describe: want one plugin name, e.g. pipelined plugins describe archive\n")
		return 2
	}
	name := pos[0]
	dirs, err := pluginDirs(cfgFile)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	spec := pluginhost.Spec{Sink: name, Plugin: name, Dirs: dirs}
	// The host's errors name a sink; here there is only the plugin.
	noSink := func(err error) string {
		return "pipelined plugins describe: " + strings.TrimPrefix(err.Error(), fmt.Sprintf("sink %q: ", name))
	}
	path, err := pluginhost.Find(spec)
	if err != nil {
		fmt.Fprintln(stderr, noSink(err))
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), describeTimeout)
	defer cancel()
	d, err := pluginhost.Describe(ctx, spec, quietOptions())
	if errors.Is(err, protocol.ErrNotDescribed) {
		fmt.Fprintf(stderr, "plugin %s (%s) does not describe its config: see its documentation (its sink does not implement sdk.Describer)\n", name, path)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, noSink(err))
		return 1
	}
	if asJSON {
		return writeDescriptionJSON(stdout, stderr, name, path, d)
	}
	writeDescription(stdout, name, path, d)
	return 0
}

// jsonField is sdk.Field as `plugins describe --json` prints it.
type jsonField struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Default  string `json:"default,omitempty"`
	Required bool   `json:"required"`
	Secret   bool   `json:"secret"`
	Doc      string `json:"doc,omitempty"`
}

func writeDescriptionJSON(stdout, stderr io.Writer, name, path string, d sdk.Description) int {
	out := struct {
		Plugin  string      `json:"plugin"`
		Path    string      `json:"path"`
		Summary string      `json:"summary"`
		Fields  []jsonField `json:"fields"`
	}{Plugin: name, Path: path, Summary: d.Summary, Fields: []jsonField{}}
	for _, f := range d.Fields {
		out.Fields = append(out.Fields, jsonField(f))
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

// writeDescription prints d as a table, one config key a row; a secret
// shows the keys it is written with.
func writeDescription(w io.Writer, name, path string, d sdk.Description) {
	fmt.Fprintf(w, "%s: %s\n", name, d.Summary)
	fmt.Fprintf(w, "plugin: %s\n\n", path)
	if len(d.Fields) == 0 {
		fmt.Fprintln(w, "It takes no config keys.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tTYPE\tDEFAULT\tREQUIRED\tSECRET\tDOC")
	for _, f := range d.Fields {
		key, secret := f.Name, "no"
		if f.Secret {
			key, secret = f.Name+"_env | "+f.Name+"_file", "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", key, f.Type, orDash(f.Default), yesNo(f.Required), secret, f.Doc)
	}
	tw.Flush()
	if slices.ContainsFunc(d.Fields, func(f sdk.Field) bool { return f.Secret }) {
		fmt.Fprintln(w, "\nSecrets are never written inline: set <key>_env to an environment variable or <key>_file to a file.")
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// quietOptions keeps the plugin's own log lines out of the CLI's output.
func quietOptions() *pluginhost.Options {
	return &pluginhost.Options{Logger: slog.New(slog.DiscardHandler)}
}
