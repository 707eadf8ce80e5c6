package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/rules"
)

const adminUsage = `usage:
  pipelined events list [--source S] [--sink S] [--state pending|dead|delivered] [--since T] [--until T] [--dedup-key K] [--when EXPR] [--limit N] [--after CURSOR] [--newest]
  pipelined events list --rejected [--source S] [--since T] [--limit N] [--after CURSOR]
  pipelined events show ID
  pipelined sinks
  pipelined sinks pause SINK
  pipelined sinks resume SINK
  pipelined sinks retry-now SINK
  pipelined dlq list SINK [--limit N] [--after SEQ]
  pipelined dlq retry SINK (--id ID ... | --all)
  pipelined dlq drop SINK (--id ID ... | --all)
  pipelined dlq add SINK (--id ID ... | --all) [--reason TEXT]
  pipelined replay --sink S --since T [--until T] [--source S] [--when EXPR] [--all-events]
  pipelined reload

These talk to a running daemon's admin API. Common flags:
  --admin URL         admin API (default: http:// + [admin] listen of the config, else http://127.0.0.1:8081)
  -c FILE             configuration file to read [admin] from (default ./pipeline.toml when it exists)
  --token-env NAME    environment variable holding the admin token (default: [admin] token_env)
  --token-file FILE   file holding the admin token (default: [admin] token_file)
  --json              print the API's JSON instead of a table

Times are RFC 3339 (2025-03-14T15:09:26Z) or a duration ago (90m, 24h).
A replay re-enqueues the events of the log that were routed to the sink
(all events with --all-events) as retries due now; an event still queued
for the sink is not queued twice, and one in its dead-letter queue stays
there (dlq retry sends it again). dlq drop removes dead letters for good.
dlq add gives up on events waiting in the sink's queue: each goes to the
dead-letter queue at its next turn instead of to the sink. dlq add --all
does so for every event waiting for a sink removed from the configuration
(pipelined sinks lists it as removed): they go to its dead-letter queue
at once; a configured sink's events are given up on by id only.
sinks pause holds a sink's delivery (its events wait in its queue) until
sinks resume, across restarts of the daemon. sinks retry-now, once a sink
is back after an outage, makes its events waiting for a retry (a backoff,
a Retry-After of up to 24h) due now and, if its breaker is open, probes at
once.
Exit status: 0 ok, 1 the call failed, 2 usage error.
`

// adminFlags are the flags every admin command takes.
type adminFlags struct {
	cfgFile, adminURL, tokenEnv, tokenFile string
	asJSON                                 bool
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// errUsage marks a usage error (exit 2); its text is printed with the
// usage of the command (usage; adminUsage when empty).
type errUsage struct{ msg, usage string }

func (e errUsage) Error() string { return e.msg }

func usageErr(format string, a ...any) error { return errUsage{msg: fmt.Sprintf(format, a...)} }

// errHelp is -h: its text, the command's usage, goes to stdout (exit 0).
type errHelp struct{ usage string }

func (e errHelp) Error() string { return "help requested" }

// errJSON is a failure of a command run with --json: printed on stdout
// as {"error": "...", "status": N} (status only for an API answer).
type errJSON struct{ err error }

func (e errJSON) Error() string { return e.err.Error() }
func (e errJSON) Unwrap() error { return e.err }

// cmdDoc says what each admin command does, under its usage lines.
var cmdDoc = map[string]string{
	"events": "Lists the events of the log (or, with --rejected, the refused requests kept by\nsources with keep_rejected), or shows one event with its headers and body.\n",
	"sinks":  "Shows each sink: its plugin's state, its queue, the age of the oldest event\nwaiting, its dead letters and its last error. pause holds a sink's delivery\nuntil resume, across restarts. retry-now, once the sink is back after an\noutage, makes every event of it waiting for a retry (a backoff, a\nRetry-After of up to 24h, from before the daemon's last start too) due now\nand, if its breaker is open, sends a probe at once; a paused sink stays\npaused.\n",
	"dlq":    "Lists, retries or drops a sink's dead letters; drop is the only way an event\nleaves a dead-letter queue. add gives up on events waiting in the sink's\nqueue (an event that keeps failing, or holds its order_key's events back):\neach goes to the dead-letter queue instead of to the sink, at once when it\nis ready or retrying, else when its order_key comes to it; one in flight\ngoes there if that attempt fails. The daemon keeps what is not done yet\nacross restarts. add --all moves every event waiting for a sink removed from\nthe configuration (listed as removed by pipelined sinks) to its dead-letter\nqueue at once; drop --all then deletes them, and the sink leaves the list.\nNot with the JetStream backend.\n",
	"replay": "Re-enqueues the events of the log that were routed to the sink (all events\nwith --all-events) as retries due now; an event still queued for the sink is\nnot queued twice.\n",
	"reload": "Makes the running daemon apply its configuration file again; a bad file is\nrefused and the running configuration stays.\n",
}

// cmdUsage returns the usage of one admin command: its lines of
// adminUsage (every sub-command's when sub is empty), then its flags.
func cmdUsage(cmd, sub string, fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString("usage:\n")
	prefix := strings.TrimSpace("  pipelined " + cmd + " " + sub)
	for _, line := range strings.Split(adminUsage, "\n") {
		if t := strings.TrimSpace(line); t == prefix || strings.HasPrefix(t, prefix+" ") {
			b.WriteString(line + "\n")
		}
	}
	if doc := cmdDoc[cmd]; doc != "" {
		b.WriteString("\n" + doc)
	}
	if fs != nil {
		b.WriteString("\nflags:\n")
		out := fs.Output()
		fs.SetOutput(&b)
		fs.PrintDefaults()
		fs.SetOutput(out)
	}
	b.WriteString("\n")
	if u := b.String(); strings.Contains(u, "--since") || strings.Contains(u, "--until") {
		b.WriteString("Times are RFC 3339 (2025-03-14T15:09:26Z) or a duration ago (90m, 24h).\n")
	}
	b.WriteString("Exit status: 0 ok, 1 the call failed, 2 usage error.\n")
	return b.String()
}

// adminCLI runs one admin command: events, sinks, dlq, replay or reload.
func adminCLI(cmd string, args []string, stdout, stderr io.Writer) int {
	name := "pipelined " + cmd
	sub := ""
	if cmd == "events" || cmd == "dlq" {
		if len(args) == 0 {
			fmt.Fprintf(stderr, "%s: missing command\n\n%s", name, cmdUsage(cmd, "", nil))
			return 2
		}
		sub, args = args[0], args[1:]
		name += " " + sub
	}
	if cmd == "sinks" && len(args) > 0 && isSinksSub(args[0]) {
		sub, args = args[0], args[1:]
		name += " " + sub
	}
	if sub == "help" || sub == "-h" || sub == "-help" || sub == "--help" {
		fmt.Fprint(stdout, cmdUsage(cmd, "", nil))
		return 0
	}
	err := runAdmin(cmd, sub, &name, args, stdout, stderr)
	var ue errUsage
	var he errHelp
	var je errJSON
	switch {
	case err == nil:
		return 0
	case errors.As(err, &he):
		fmt.Fprint(stdout, he.usage)
		return 0
	case errors.As(err, &ue):
		if ue.usage == "" {
			ue.usage = adminUsage
		}
		fmt.Fprintf(stderr, "%s: %s\n\n%s", name, ue.msg, ue.usage)
		return 2
	case errors.Is(err, errFlags):
		fmt.Fprintf(stderr, "run %s -h for usage\n", name)
		return 2
	case errors.As(err, &je):
		v := struct {
			Error  string `json:"error"`
			Status int    `json:"status,omitempty"`
		}{Error: withHint(je.err).Error()}
		var apiErr *admin.APIError
		if errors.As(je.err, &apiErr) {
			v.Error, v.Status = apiErr.Message, apiErr.Status
		}
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		enc.Encode(v)
		return 1
	}
	// The error may quote the daemon's answer, which may quote a sender.
	fmt.Fprintf(stderr, "%s: %s\n", name, termSafe(withHint(err).Error(), true))
	return 1
}

// withHint adds what to do to the errors of the admin client whose fix is
// a flag of the CLI.
func withHint(err error) error {
	var apiErr *admin.APIError
	var urlErr *url.Error
	switch {
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized:
		return fmt.Errorf("%w (give the token with --token-env or --token-file; a running daemon keeps the token it started with, so restart it after changing the token)", err)
	case errors.As(err, &urlErr) && !errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w (is pipelined running? set --admin)", err)
	}
	return err
}

// errFlags: the flag package printed the problem already; adminCLI adds
// where to find the usage.
var errFlags = errors.New("bad flags")

// runAdmin runs the command that adminCLI names *name; it adds the
// subcommand to *name when it comes after the flags (sinks -c FILE pause).
func runAdmin(cmd, sub string, name *string, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet(*name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // -h prints the usage on stdout; a bad flag, the hint below
	var af adminFlags
	defer func() {
		var ue errUsage
		switch {
		case errors.Is(err, flag.ErrHelp):
			err = errHelp{cmdUsage(cmd, sub, fs)}
		case errors.As(err, &ue):
			if ue.usage == "" {
				ue.usage = cmdUsage(cmd, sub, fs)
			}
			err = ue
		case err != nil && !errors.Is(err, errFlags) && af.asJSON:
			err = errJSON{err}
		}
	}()
	fs.StringVar(&af.cfgFile, "c", "", "configuration `file`")
	fs.StringVar(&af.cfgFile, "config", "", "configuration `file` (same as -c)")
	fs.StringVar(&af.adminURL, "admin", "", "admin API `URL`")
	fs.StringVar(&af.tokenEnv, "token-env", "", "environment `variable` holding the admin token")
	fs.StringVar(&af.tokenFile, "token-file", "", "`file` holding the admin token")
	fs.BoolVar(&af.asJSON, "json", false, "print JSON")
	var f cmdFlags
	if !f.define(fs, cmd, sub) {
		return errUsage{msg: fmt.Sprintf("unknown command %q", sub), usage: cmdUsage(cmd, "", nil)}
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errFlags
	}
	if cmd == "sinks" && sub == "" && len(pos) > 0 && isSinksSub(pos[0]) {
		sub, pos = pos[0], pos[1:] // flags came first: sinks -c FILE pause SINK
		*name += " " + sub
	}
	wantPos := map[string]int{"show": 1, "dlq list": 1, "dlq retry": 1, "dlq drop": 1, "dlq add": 1, "sinks pause": 1, "sinks resume": 1, "sinks retry-now": 1}[strings.TrimPrefix(cmd+" "+sub, "events ")]
	if len(pos) != wantPos {
		if wantPos == 0 {
			return usageErr("unexpected argument %q", pos[0])
		}
		return usageErr("want %d argument(s), got %d", wantPos, len(pos))
	}
	now := time.Now()
	if err := f.check(now); err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	pr := &printer{c: c, asJSON: af.asJSON, newest: f.newest, stdout: stdout, stderr: stderr}
	return f.run(pr, cmd+" "+sub, pos, now)
}

// cmdFlags are the flags of the admin commands beyond the connection's:
// each command defines those it takes.
type cmdFlags struct {
	source, sink, state, since, until, dedupKey, when, after, reason string
	limit                                                            int
	ids                                                              stringList
	all, allEvents, rejected, newest                                 bool
}

// define adds to fs the flags of the command cmd sub; false for a command
// that does not exist.
func (f *cmdFlags) define(fs *flag.FlagSet, cmd, sub string) bool {
	switch {
	case cmd == "events" && sub == "list":
		fs.BoolVar(&f.rejected, "rejected", false, "list rejected requests (kept by sources with keep_rejected) instead of events")
		fs.StringVar(&f.source, "source", "", "only events of this source")
		fs.StringVar(&f.sink, "sink", "", "only events routed to this sink")
		fs.StringVar(&f.state, "state", "", "only events whose delivery to --sink (to any sink without it) is `STATE`: pending, dead or delivered")
		fs.StringVar(&f.since, "since", "", "only events received at or after `T`")
		fs.StringVar(&f.until, "until", "", "only events received before `T`")
		fs.StringVar(&f.dedupKey, "dedup-key", "", "only events with this dedup key")
		fs.StringVar(&f.when, "when", "", "only events for which this expr `expression` is true")
		fs.IntVar(&f.limit, "limit", 50, "at most `N` events")
		fs.StringVar(&f.after, "after", "", "continue after this `cursor`")
		fs.BoolVar(&f.newest, "newest", false, "newest events first (the default is log order, oldest first)")
	case cmd == "dlq" && sub == "list":
		fs.IntVar(&f.limit, "limit", 50, "at most `N` dead letters")
		fs.StringVar(&f.after, "after", "", "continue after this `seq`")
	case cmd == "dlq" && (sub == "retry" || sub == "drop"):
		fs.Var(&f.ids, "id", "event `ID` (repeat for more)")
		fs.BoolVar(&f.all, "all", false, "every dead letter of the sink")
	case cmd == "dlq" && sub == "add":
		fs.Var(&f.ids, "id", "event `ID` (repeat for more)")
		fs.BoolVar(&f.all, "all", false, "every event waiting for the sink, which must be one removed from the configuration")
		fs.StringVar(&f.reason, "reason", "", "why, kept in each dead letter's error")
	case cmd == "replay":
		fs.StringVar(&f.sink, "sink", "", "the sink to replay to")
		fs.StringVar(&f.since, "since", "", "replay events received at or after `T`")
		fs.StringVar(&f.until, "until", "", "replay events received before `T` (default now)")
		fs.StringVar(&f.source, "source", "", "only events of this source")
		fs.StringVar(&f.when, "when", "", "only events for which this expr `expression` is true")
		fs.BoolVar(&f.allEvents, "all-events", false, "also events that were not routed to the sink")
	case cmd == "events" && sub == "show", cmd == "sinks", cmd == "reload":
		// sinks pause|resume|retry-now SINK take no flags of their own either.
	default:
		return false
	}
	return true
}

// parseInterspersed parses fs's flags wherever they stand among args, as
// users type them (pipelined dlq list archive --limit 5), and returns the
// other arguments in order.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// check refuses, as a usage error, what the daemon would refuse: a state,
// a time or an expression that is wrong.
func (f *cmdFlags) check(now time.Time) error {
	if !pipeline.ValidFilterState(f.state) {
		return usageErr("--state %q: want pending, dead or delivered (or queued, retrying, dropped)", f.state)
	}
	for _, t := range []struct{ flag, v string }{{"--since", f.since}, {"--until", f.until}} {
		if _, err := admin.ParseTime(t.v, now); err != nil {
			return usageErr("%s: %v", t.flag, err)
		}
	}
	if strings.TrimSpace(f.when) != "" {
		// The daemon would refuse it too; a bad expression is the
		// caller's mistake, so exit 2 with the usage, like a bad flag.
		if _, err := rules.CompileBool(f.when); err != nil {
			return usageErr("--when: %v", err)
		}
	}
	return nil
}

// run runs the command ("events list", "sinks ", ...) with its positional
// arguments pos, printing through pr.
func (f *cmdFlags) run(pr *printer, command string, pos []string, now time.Time) error {
	switch command {
	case "events list":
		if f.rejected {
			if f.newest {
				return usageErr("--newest lists events; rejected requests are listed oldest first only")
			}
			q := url.Values{"limit": {strconv.Itoa(f.limit)}}
			for k, v := range map[string]string{"source": f.source, "after": f.after, "since": absTime(f.since, now)} {
				if v != "" {
					q.Set(k, v)
				}
			}
			return pr.rejectionsList(q)
		}
		q := url.Values{}
		for k, v := range map[string]string{"source": f.source, "sink": f.sink, "state": f.state, "dedup_key": f.dedupKey, "when": f.when, "after": f.after,
			"since": absTime(f.since, now), "until": absTime(f.until, now), "limit": strconv.Itoa(f.limit)} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if f.newest {
			q.Set("order", "newest")
		}
		return pr.eventsList(q)
	case "events show":
		return pr.eventShow(pos[0])
	case "sinks ":
		return pr.sinks()
	case "sinks pause", "sinks resume":
		return pr.pauseSink(pos[0], command == "sinks pause")
	case "sinks retry-now":
		return pr.retryNow(pos[0])
	case "dlq list":
		q := url.Values{"limit": {strconv.Itoa(f.limit)}}
		if f.after != "" {
			q.Set("after", f.after)
		}
		return pr.dlqList(pos[0], q)
	case "dlq retry", "dlq drop":
		if f.all == (len(f.ids) > 0) {
			return usageErr("give --id ID (one or more) or --all")
		}
		return pr.dlqSettle(strings.TrimPrefix(command, "dlq "), pos[0], admin.DeadLetterRequest{IDs: f.ids, All: f.all})
	case "dlq add":
		if f.all == (len(f.ids) > 0) {
			return usageErr("give --id ID (one or more), or --all for the queue of a sink removed from the configuration")
		}
		return pr.dlqSettle("add", pos[0], admin.DeadLetterRequest{IDs: f.ids, All: f.all, Reason: f.reason})
	case "replay ":
		switch {
		case f.sink == "" && f.since == "":
			return usageErr("--sink and --since are required")
		case f.sink == "":
			return usageErr("--sink is required: the sink to deliver the events to again")
		case f.since == "":
			return usageErr("--since is required: the oldest event to replay (RFC 3339, or a duration ago such as 24h)")
		}
		return pr.replay(admin.ReplayRequest{Sink: f.sink, Since: absTime(f.since, now), Until: absTime(f.until, now),
			Source: f.source, When: f.when, AllEvents: f.allEvents})
	case "reload ":
		return pr.reload()
	}
	return usageErr("unknown command")
}

// absTime turns a duration ago into RFC 3339, so that the daemon counts
// from the moment the command ran; it leaves anything else as it is.
func absTime(s string, now time.Time) string {
	if _, err := time.ParseDuration(s); err == nil {
		t, _ := admin.ParseTime(s, now)
		return t.UTC().Format(time.RFC3339Nano)
	}
	return s
}

// adminConfig is the part of pipeline.toml the admin commands read. It is
// decoded leniently: the rest of the file is not checked here.
type adminConfig struct {
	Admin struct {
		Listen    string `toml:"listen"`
		TokenEnv  string `toml:"token_env"`
		TokenFile string `toml:"token_file"`
	} `toml:"admin"`
}

// client builds the API client from the flags and the configuration.
func (af *adminFlags) client() (*admin.Client, error) {
	var ac adminConfig
	file := af.cfgFile
	if file == "" {
		if _, err := os.Stat("pipeline.toml"); err == nil {
			file = "pipeline.toml"
		}
	}
	if file != "" {
		if _, err := toml.DecodeFile(file, &ac); err != nil {
			return nil, fmt.Errorf("read [admin] of %s: %w", file, err)
		}
	}
	base := af.adminURL
	if base == "" {
		base = adminURL(ac.Admin.Listen)
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageErr("--admin %q: want a URL such as http://127.0.0.1:8081", base)
	}
	tokenEnv, tokenFile := af.tokenEnv, af.tokenFile
	fromFile := tokenEnv == "" && tokenFile == ""
	if fromFile {
		tokenEnv, tokenFile = ac.Admin.TokenEnv, ac.Admin.TokenFile
	}
	var token string
	switch {
	case tokenEnv != "":
		token = os.Getenv(tokenEnv)
		if token == "" {
			return nil, fmt.Errorf("admin token: environment variable %s is empty or unset", tokenEnv)
		}
	case tokenFile != "":
		// As the daemon reads it: variables expanded (a systemd
		// credential), and a relative path in the file resolved against
		// the file's directory.
		name, err := config.ExpandFile(tokenFile)
		if err != nil && fromFile && strings.Contains(tokenFile, "CREDENTIALS_DIRECTORY") && os.Getenv("CREDENTIALS_DIRECTORY") == "" {
			// A systemd credential: from a shell, the file it is loaded from.
			return nil, fmt.Errorf("admin token_file %w; outside the unit, name the token's own file: --token-file FILE", err)
		}
		if err != nil {
			return nil, fmt.Errorf("admin token_file %w", err)
		}
		if fromFile && !filepath.IsAbs(name) {
			name = filepath.Join(filepath.Dir(file), name)
		}
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("admin token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	return admin.NewClient(base, token, nil), nil
}

// adminURL is the URL of an admin listen address; a wildcard host is
// reached on loopback.
func adminURL(listen string) string {
	if listen == "" {
		listen = config.DefaultAdminListen
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port)
}
