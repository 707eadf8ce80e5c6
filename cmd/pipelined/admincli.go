package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
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

// printer runs one admin command with the client and prints its answer:
// the API's JSON as it is with --json, else a table or a sentence. In
// these, every string of the answer goes through [cell] (or [termSafe]):
// the answer holds what webhook senders wrote.
type printer struct {
	c              *admin.Client
	asJSON         bool
	newest         bool // events list --newest
	stdout, stderr io.Writer
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// list makes one list call with get and prints its page: the API's JSON as
// it is with --json, else a table of header and the lines rows writes,
// then, on stderr, how to ask for the next page (next, once get ran).
func (p *printer) list(get func(c *admin.Client) error, next *string, header string, rows func(io.Writer)) error {
	var raw []byte
	if err := get(p.c.WithRaw(&raw)); err != nil {
		return err
	}
	if p.asJSON {
		_, err := p.stdout.Write(raw)
		return err
	}
	tw := table(p.stdout)
	fmt.Fprintln(tw, header)
	rows(tw)
	if err := tw.Flush(); err != nil {
		return err
	}
	if *next != "" {
		more := "more: add --after " + cell(*next)
		if p.newest {
			more += " (with --newest: the cursors of the two orders differ)"
		}
		fmt.Fprintln(p.stderr, more)
	}
	return nil
}

func (p *printer) eventsList(q url.Values) error {
	var list admin.EventList
	err := p.list(func(c *admin.Client) (err error) { list, err = c.Events(context.Background(), q); return err }, &list.Next,
		"ID\tSEQ\tRECEIVED_AT\tSOURCE\tSINKS\tDEDUP_KEY", func(w io.Writer) {
			for _, e := range list.Events {
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", cell(e.ID), e.Seq, fmtTime(e.ReceivedAt), cell(e.Source), orDash(cell(strings.Join(e.Sinks, ","))), orDash(cell(e.DedupKey)))
			}
		})
	if sink := q.Get("sink"); err == nil && sink != "" && len(list.Events) == 0 {
		p.noteUnknownSink(sink)
	}
	return err
}

// noteUnknownSink says on stderr when sink, a filter that matched nothing,
// is no sink the daemon knows (a typo reads like "nothing there"). Events
// of a sink removed from the file can still be listed, so it is a note.
func (p *printer) noteUnknownSink(sink string) {
	ss, err := p.c.Sinks(context.Background())
	if err != nil {
		return
	}
	names := make([]string, 0, len(ss))
	for _, s := range ss {
		if s.Name == sink {
			return
		}
		names = append(names, cell(s.Name))
	}
	known := "it has none"
	if len(names) > 0 {
		known = "sinks: " + strings.Join(names, ", ")
	}
	fmt.Fprintf(p.stderr, "note: the daemon has no sink %q (%s)\n", sink, known)
}

// deliveries prints what happened to e at each sink, as a table whose
// headings are the JSON keys.
func (p *printer) deliveries(e admin.Event) error {
	switch {
	case e.Deliveries == nil:
		_, err := fmt.Fprintln(p.stdout, "deliveries:\tnot recorded by this log backend")
		return err
	case len(e.Deliveries) == 0:
		_, err := fmt.Fprintln(p.stdout, "deliveries:\t- (routed to no sink)")
		return err
	}
	fmt.Fprintln(p.stdout, "deliveries:")
	tw := table(p.stdout)
	// The headings are the JSON keys of a delivery record, upper-cased;
	// DROPPED_AT only when a record has one (an operator dropped a dead
	// letter of the event).
	dropped := slices.ContainsFunc(e.Deliveries, func(d admin.Delivery) bool { return d.DroppedAt != nil })
	head := "  SINK\tROUTE\tSTATE\tATTEMPTS\tFIRST_ATTEMPT_AT\tLAST_ATTEMPT_AT\tDELIVERED_AT\tNEXT_ATTEMPT_AT"
	if dropped {
		head += "\tDROPPED_AT"
	}
	fmt.Fprintln(tw, head+"\tLAST_ERROR")
	at := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return fmtTime(*t)
	}
	failed, notAttempted := false, false
	for _, d := range e.Deliveries {
		next := at(d.NextAttemptAt)
		if d.Held {
			next = "held" // behind its order_key, or the breaker's probes
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\t%s\t%s", cell(d.Sink), orDash(cell(d.Route)), cell(d.State), d.Attempts,
			at(d.FirstAttemptAt), at(d.LastAttemptAt), at(d.DeliveredAt), next)
		if dropped {
			fmt.Fprintf(tw, "\t%s", at(d.DroppedAt))
		}
		fmt.Fprintf(tw, "\t%s\n", orDash(cell(strings.Join(strings.Fields(d.LastError), " "))))
		failed = failed || len(d.Failures) > 0
		notAttempted = notAttempted || d.NotAttemptedReason != ""
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if notAttempted {
		// Why an event waits that its last error (an attempt's) does
		// not explain: the rest of a batch after a 503 with Retry-After.
		fmt.Fprintln(p.stdout, "not attempted at the sink's latest call (no attempt counted):")
		tw = table(p.stdout)
		fmt.Fprintln(tw, "  SINK\tREASON")
		for _, d := range e.Deliveries {
			if d.NotAttemptedReason != "" {
				fmt.Fprintf(tw, "  %s\t%s\n", cell(d.Sink), cell(strings.Join(strings.Fields(d.NotAttemptedReason), " ")))
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if !failed {
		return nil
	}
	fmt.Fprintln(p.stdout, "failures (the latest of each sink, oldest first):")
	tw = table(p.stdout)
	fmt.Fprintln(tw, "  SINK\tATTEMPT\tAT\tERROR")
	for _, d := range e.Deliveries {
		for _, f := range d.Failures {
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", cell(d.Sink), f.Attempt, fmtTime(f.At), orDash(cell(strings.Join(strings.Fields(f.Error), " "))))
		}
	}
	return tw.Flush()
}

func (p *printer) rejectionsList(q url.Values) error {
	var list admin.RejectionList
	return p.list(func(c *admin.Client) (err error) { list, err = c.Rejections(context.Background(), q); return err }, &list.Next,
		"RECEIVED_AT\tSOURCE\tSTATUS\tREMOTE_ADDR\tREASON", func(w io.Writer) {
			for _, r := range list.Rejections {
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", fmtTime(r.ReceivedAt), cell(r.Source), r.Status, orDash(cell(r.RemoteAddr)), cell(r.Reason))
			}
		})
}

func (p *printer) eventShow(id string) error {
	var raw []byte
	e, err := p.c.WithRaw(&raw).Event(context.Background(), id)
	if err != nil {
		return err
	}
	if p.asJSON {
		_, err := p.stdout.Write(raw)
		return err
	}
	tw := table(p.stdout)
	fmt.Fprintf(tw, "id:\t%s\nseq:\t%d\nsource:\t%s\nreceived_at:\t%s\nauth:\t%s\ndedup_key:\t%s\nsinks:\t%s\n",
		cell(e.ID), e.Seq, cell(e.Source), e.ReceivedAt.UTC().Format(time.RFC3339Nano), orDash(cell(e.Auth)), orDash(cell(e.DedupKey)), orDash(cell(strings.Join(e.Sinks, ", "))))
	for _, k := range sortedKeys(e.Headers) {
		fmt.Fprintf(tw, "header %s:\t%s\n", cell(k), cell(e.Headers[k]))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := p.deliveries(e); err != nil {
		return err
	}
	var body bytes.Buffer
	if json.Indent(&body, e.Body, "", "  ") != nil {
		body.Reset()
		body.Write(e.Body)
	}
	// JSON has no raw controls in its strings, but it may have DEL, C1,
	// bidi controls and bytes that are not UTF-8. termSafe writes the
	// characters as JSON escapes, so the body still reads (and decodes) as
	// the same JSON; --json has it as the daemon sent it.
	_, err = fmt.Fprintf(p.stdout, "body:\n%s\n", termSafe(body.String(), true))
	return err
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (p *printer) sinks() error {
	var raw []byte
	list, err := p.c.WithRaw(&raw).SinkList(context.Background())
	if err != nil {
		return err
	}
	sinks := list.Sinks
	if p.asJSON {
		_, err := p.stdout.Write(raw)
		return err
	}
	tw := table(p.stdout)
	// The headings are the JSON keys of --json, upper-cased.
	fmt.Fprintln(tw, "NAME\tPLUGIN\tBREAKER\tPAUSED\tREADY\tRETRYING\tOLDEST_AGE_SECONDS\tDEAD\tHELD_KEYS\tOLDEST_HELD_AGE_SECONDS\tIN_FLIGHT\tIN_FLIGHT_SECONDS\tNEXT_PROBE_SECONDS\tNEXT_RETRY_SECONDS\tLAST_ERROR")
	for _, s := range sinks {
		oldest := "-"
		if s.OldestAgeSeconds > 0 {
			oldest = strconv.FormatFloat(math.Round(s.OldestAgeSeconds), 'f', 0, 64)
		}
		plugin := cell(s.Plugin)
		if s.PluginReason != "" {
			plugin += ": " + oneLine(s.PluginReason)
		}
		lastErr := lastErrorCell(s.Name, s.LastError)
		if lastErr != "" && !s.LastErrorAt.IsZero() {
			lastErr = fmtAge(time.Since(s.LastErrorAt)) + " ago: " + lastErr
		}
		paused := "-"
		if s.Paused {
			paused = "paused"
		}
		heldKeys, oldestHeld := heldCells(s)
		ready, retrying, dead := strconv.Itoa(s.Ready), strconv.Itoa(s.Retrying), strconv.Itoa(s.Dead)
		switch {
		case s.Rebuilding:
			ready, retrying, dead = "rebuilding", "-", "-"
		case s.QueueError != "":
			ready, retrying, dead = "unknown", "-", "-"
		}
		inFlight, inFlightSecs := "-", "-"
		if s.InFlight > 0 {
			inFlight, inFlightSecs = strconv.Itoa(s.InFlight), strconv.FormatFloat(math.Round(s.InFlightSeconds), 'f', 0, 64)
		}
		// Rounded up, as the time until something is due: 0.4 s is 1.
		nextProbe, nextRetry := "-", "-"
		if s.NextProbeSeconds > 0 {
			nextProbe = strconv.FormatFloat(math.Ceil(s.NextProbeSeconds), 'f', 0, 64)
		}
		if s.NextRetrySeconds > 0 {
			nextRetry = strconv.FormatFloat(math.Ceil(s.NextRetrySeconds), 'f', 0, 64)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(s.Name), plugin, orDash(cell(s.Breaker)), paused,
			ready, retrying, oldest, dead, heldKeys, oldestHeld, inFlight, inFlightSecs, nextProbe, nextRetry, orDash(lastErr))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range sinks {
		if s.QueueError != "" {
			fmt.Fprintf(p.stderr, "sink %s: its queue could not be counted: %s\n", cell(s.Name), oneLine(s.QueueError))
		}
	}
	if r := list.QueuesRebuild; r != nil {
		fmt.Fprintf(p.stderr, "the sinks' queues are being rebuilt after the start: %d of about %d events read; the counts follow once it is done, and delivery starts then\n", r.Read, r.Total)
		if r.Error != "" {
			fmt.Fprintf(p.stderr, "its last attempt failed (it is tried again; see the daemon's log): %s\n", oneLine(r.Error))
		}
	}
	return nil
}

// heldCells are the HELD_KEYS and OLDEST_HELD_AGE_SECONDS cells of a sink
// (delivery.order_key): "-" when nothing is held.
func heldCells(s admin.SinkStatus) (keys, oldest string) {
	if s.HeldKeys == 0 {
		return "-", "-"
	}
	oldest = "-"
	if s.OldestHeldAgeSeconds > 0 {
		oldest = strconv.FormatFloat(math.Round(s.OldestHeldAgeSeconds), 'f', 0, 64)
	}
	return strconv.Itoa(s.HeldKeys), oldest
}

// lastErrorCell puts a sink's last error on one line for the LAST ERROR
// column, without the `sink "NAME": ` its row already says, cut at 120
// bytes (--json has it whole), then made safe for the terminal: the
// escapes can make it longer.
func lastErrorCell(sink, msg string) string {
	msg = strings.Join(strings.Fields(msg), " ")
	msg = strings.TrimPrefix(msg, fmt.Sprintf("sink %q: ", sink))
	return cell(cut(msg, 120))
}

// fmtAge prints an age to the second, or in minutes or hours when long.
func fmtAge(d time.Duration) string {
	switch {
	case d < time.Second:
		return "<1s"
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// oneLine puts s on one line, cut at 80 bytes, and makes it safe for the
// terminal (the escapes can make it longer).
func oneLine(s string) string {
	return cell(cut(strings.Join(strings.Fields(s), " "), 80))
}

func (p *printer) dlqList(sink string, q url.Values) error {
	var v admin.DeadLetterList
	return p.list(func(c *admin.Client) (err error) { v, err = c.DeadLetters(context.Background(), sink, q); return err }, &v.Next,
		"ID\tSEQ\tFAILED_AT\tATTEMPTS\tROUTE\tERROR", func(w io.Writer) {
			for _, d := range v.DeadLetters {
				fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%s\t%s\n", cell(d.ID), d.Seq, fmtTime(d.FailedAt), d.Attempts, orDash(cell(d.Route)), orDash(oneLine(d.Error)))
			}
		})
}

func (p *printer) dlqSettle(action, sink string, req admin.DeadLetterRequest) error {
	var raw []byte
	res, err := p.c.WithRaw(&raw).SettleDead(context.Background(), action, sink, req)
	if err != nil {
		return err
	}
	if p.asJSON {
		p.stdout.Write(raw)
	} else {
		switch {
		case action == "add" && req.All:
			fmt.Fprintf(p.stdout, "gave up on %d event(s) waiting for %s, a sink removed from the configuration: they are in its dead-letter queue now (pipelined dlq drop %s --all deletes them)\n",
				res.Count, sink, sink)
		case action == "add" && res.Count == 0: // the error below says why
		case action == "add":
			fmt.Fprintf(p.stdout, "gave up on %d event(s) of %s: each goes to its dead-letter queue at its next turn\n", res.Count, sink)
		default:
			verb := map[string]string{"retry": "retried", "drop": "dropped"}[action]
			fmt.Fprintf(p.stdout, "%s %d dead letter(s) of %s\n", verb, res.Count, sink)
		}
		for _, id := range res.IDs {
			fmt.Fprintln(p.stdout, cell(id))
		}
		if res.IDsOmitted > 0 {
			fmt.Fprintf(p.stdout, "… and %d more\n", res.IDsOmitted)
		}
	}
	if len(res.NotFound) > 0 {
		where := "in the dead-letter queue of"
		if action == "add" {
			where = "waiting in the queue of"
		}
		ids := make([]string, len(res.NotFound))
		for i, id := range res.NotFound {
			ids[i] = cell(id) // on the error's one line
		}
		return fmt.Errorf("not %s %s: %s", where, sink, strings.Join(ids, ", "))
	}
	return nil
}

func (p *printer) replay(req admin.ReplayRequest) error {
	bar := isTerminal(p.stderr) && !p.asJSON
	var progress func(admin.ReplayProgress)
	if bar {
		progress = func(pr admin.ReplayProgress) { drawBar(p.stderr, pr) }
	}
	var raw []byte
	last, err := p.c.WithRaw(&raw).Replay(context.Background(), req, progress)
	if bar {
		fmt.Fprintln(p.stderr)
	}
	if err != nil {
		return err
	}
	if p.asJSON {
		p.stdout.Write(append(raw, '\n'))
	} else {
		dead := ""
		if last.InDeadLetterQueue > 0 {
			// A replay leaves a dead letter where it is: say so, and how
			// to send it again.
			dead = fmt.Sprintf(", %d in the dead-letter queue (not replayed: pipelined dlq retry %s --id ID, or --all)",
				last.InDeadLetterQueue, req.Sink)
		}
		// AlreadyQueued counts the dead letters too (see
		// admin.ReplayProgress).
		fmt.Fprintf(p.stdout, "replayed to %s: %d enqueued, %d already queued%s (%d matched of %d scanned)\n",
			req.Sink, last.Enqueued, last.AlreadyQueued-last.InDeadLetterQueue, dead, last.Matched, last.Scanned)
	}
	if last.Error != "" {
		return fmt.Errorf("replay stopped after %d enqueued: %s", last.Enqueued, last.Error)
	}
	return nil
}

// drawBar draws the replay's progress through its time range on one line.
func drawBar(w io.Writer, p admin.ReplayProgress) {
	const width = 30
	frac := 1.0
	if !p.Done {
		span := p.Until.Sub(p.Since)
		frac = 0
		if span > 0 && !p.At.IsZero() {
			frac = min(max(float64(p.At.Sub(p.Since))/float64(span), 0), 1)
		}
	}
	n := int(frac * width)
	fmt.Fprintf(w, "\r[%s%s] %3.0f%%  %d scanned, %d enqueued", strings.Repeat("=", n), strings.Repeat(" ", width-n), frac*100, p.Scanned, p.Enqueued)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (p *printer) pauseSink(sink string, paused bool) error {
	var raw []byte
	res, err := p.c.WithRaw(&raw).PauseSink(context.Background(), sink, paused)
	if err != nil {
		return err
	}
	if p.asJSON {
		_, err := p.stdout.Write(raw)
		return err
	}
	switch {
	case res.Paused && res.Changed:
		_, err = fmt.Fprintf(p.stdout, "sink %s paused: its events wait until `pipelined sinks resume %s`\n", sink, sink)
	case res.Paused:
		_, err = fmt.Fprintf(p.stdout, "sink %s was paused already\n", sink)
	case res.Changed:
		_, err = fmt.Fprintf(p.stdout, "sink %s resumed\n", sink)
	default:
		_, err = fmt.Fprintf(p.stdout, "sink %s was not paused\n", sink)
	}
	return err
}

// isSinksSub reports whether arg is a subcommand of pipelined sinks.
func isSinksSub(arg string) bool {
	return arg == "pause" || arg == "resume" || arg == "retry-now"
}

func (p *printer) retryNow(sink string) error {
	var raw []byte
	res, err := p.c.WithRaw(&raw).RetryNow(context.Background(), sink)
	if err != nil {
		return err
	}
	if p.asJSON {
		_, err := p.stdout.Write(raw)
		return err
	}
	events := "events"
	if res.Hastened == 1 {
		events = "event"
	}
	line := fmt.Sprintf("sink %s: %d %s waiting for a retry made due now", sink, res.Hastened, events)
	switch {
	case res.Paused:
		line += fmt.Sprintf("; the sink is paused: they wait until `pipelined sinks resume %s`", sink)
		if res.Probing {
			line += ", and its open breaker probes then"
		}
	case res.Probing:
		line += "; its breaker is open: probing now (every event waiting goes once a probe succeeds)"
	default:
		line += "; its breaker is closed"
	}
	_, err = fmt.Fprintln(p.stdout, line)
	return err
}

// reloadWait bounds pipelined reload: under the admin listener's default
// write_timeout (60s), after which the answer would be lost, and systemd's
// timeout for the unit's ExecReload.
var reloadWait = 55 * time.Second

func (p *printer) reload() error {
	ctx, cancel := context.WithTimeout(context.Background(), reloadWait)
	defer cancel()
	var raw []byte
	res, err := p.c.WithRaw(&raw).Reload(ctx)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: no answer, so the reload may or may not have been applied: the daemon's log says which", err)
		}
		return err
	}
	if p.asJSON {
		_, err := p.stdout.Write(raw)
		return err
	}
	if len(res.RestartNeeded) == 0 && len(res.SocketOwned) == 0 {
		_, err = fmt.Fprintln(p.stdout, "configuration reloaded")
		return err
	}
	var but []string
	if len(res.RestartNeeded) > 0 {
		but = append(but, fmt.Sprintf("for %s: these take effect only at a restart, and the daemon runs with their old values until then", cell(strings.Join(res.RestartNeeded, ", "))))
	}
	if len(res.SocketOwned) > 0 {
		but = append(but, fmt.Sprintf("%s cannot change: systemd passes that listener (socket activation) and its socket unit owns the address: change ListenStream= there, then restart the socket unit", cell(strings.Join(res.SocketOwned, ", "))))
	}
	_, err = fmt.Fprintf(p.stdout, "configuration reloaded, but %s\n", strings.Join(but, "; and "))
	return err
}
