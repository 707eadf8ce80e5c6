// Command pipelined-load measures an HTTP webhook receiver under load, and
// serves the bare net/http baseline it is compared with.
//
//	pipelined-load run  -url http://127.0.0.1:8080/hooks/callkaro -c 64 -d 10s [-rate 0] [-dup 0] [-payload file.json] [-warmup 1s] [-timeout 10s] [-json] [-interval 10s]
//	                    [-cpuprofile FILE] [-metrics http://127.0.0.1:8081/metrics [-sample 250ms] [-drain-timeout 60s]]
//	pipelined-load bare -listen 127.0.0.1:9090
//
// run exits 1 if any answer was not the expected one (or none was correct),
// if -metrics cannot be read or a sink's queue did not drain, 2 on a usage
// error. See README.md for how the figures are compared.
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
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"text/tabwriter"
	"time"
)

func main() {
	os.Exit(mainErr(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage:
  pipelined-load run  -url URL [-c 64] [-d 10s] [-rate 0] [-dup 0] [-payload FILE] [-warmup 1s] [-timeout 10s] [-json] [-interval 10s]
                      [-cpuprofile FILE] [-metrics URL [-sample 250ms] [-drain-timeout 60s]]
  pipelined-load bare [-listen 127.0.0.1:9090]
`

func mainErr(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "bare":
		return cmdBare(args[1:], stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "pipelined-load: unknown command %q\n%s", args[0], usage)
	return 2
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.StringVar(&cfg.URL, "url", "http://127.0.0.1:8080/hooks/callkaro", "URL to POST to")
	fs.IntVar(&cfg.Conns, "c", 64, "connections: concurrent requests (closed loop), or the most in flight with -rate")
	fs.DurationVar(&cfg.Duration, "d", 10*time.Second, "measured duration, after the warmup")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "load sent before measuring (not counted in requests/s or latency)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: total requests/s on a fixed schedule, latency from the scheduled time (0: closed loop)")
	fs.Float64Var(&cfg.Dup, "dup", 0, `fraction of requests that resend an acknowledged callSid (expecting "duplicate":true)`)
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "per-request timeout")
	payload := fs.String("payload", "", "JSON payload with a string data.callSid (default: the embedded CallKaro call_ended)")
	asJSON := fs.Bool("json", false, "print the report as a JSON object")
	cpuProfile := fs.String("cpuprofile", "", "write the load generator's own CPU profile (warmup and drain included) to this file")
	fs.BoolVar(&cfg.AnyOK, "any-2xx", false, "baseline mode: any 2xx answer counts, its body is not checked (e.g. Benthos)")
	fs.StringVar(&cfg.MetricsURL, "metrics", "", "the daemon's admin metrics URL (e.g. http://127.0.0.1:8081/metrics): report each sink's queue lag and drain time")
	fs.DurationVar(&cfg.Sample, "sample", 250*time.Millisecond, "with -metrics: how often to read the queue gauges")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 60*time.Second, "with -metrics: how long the queues get to empty after the load before the run fails")
	fs.DurationVar(&cfg.Interval, "interval", 0, "print a line on stderr every interval: the answers that arrived in it (count, latency p50/p99/max, errors), the requests in flight and the oldest's age, slots due but unsent (0: none)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg.IntervalOut = stderr
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "pipelined-load run: unexpected arguments %q\n", fs.Args())
		return 2
	}
	raw := defaultPayload
	if *payload != "" {
		var err error
		if raw, err = os.ReadFile(*payload); err != nil {
			fmt.Fprintln(stderr, "pipelined-load:", err)
			return 2
		}
	}
	tpl, err := newBodyTemplate(raw)
	if err != nil {
		fmt.Fprintln(stderr, "pipelined-load:", err)
		return 2
	}
	cfg.Body = tpl
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(stderr, "pipelined-load:", err)
			return 2
		}
		defer func() {
			pprof.StopCPUProfile()
			if err := f.Close(); err != nil {
				fmt.Fprintln(stderr, "pipelined-load:", err)
			}
		}()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, cfg)
	if rep == nil {
		fmt.Fprintln(stderr, "pipelined-load:", err)
		if _, ok := errors.AsType[*scrapeError](err); ok {
			return 1
		}
		return 2
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		printReport(stdout, rep)
	}
	for _, k := range sortedKinds(rep.ErrorKinds) {
		fmt.Fprintf(stderr, "pipelined-load: %d × %s, e.g. %s\n", rep.ErrorKinds[k], k, rep.ErrorExamples[k])
	}
	if rep.MetricsErrors > 0 {
		fmt.Fprintf(stderr, "pipelined-load: %d × read metrics %s failed (samples missing), e.g. %s\n", rep.MetricsErrors, cfg.MetricsURL, rep.MetricsError)
	}
	undrained := 0
	for _, l := range rep.Sinks {
		if !l.Drained && err == nil {
			fmt.Fprintf(stderr, "pipelined-load: FAILED: sink %s did not drain within %s of the end of the load\n", l.Sink, cfg.DrainTimeout)
			undrained++
		}
	}
	switch {
	case err != nil:
		fmt.Fprintln(stderr, "pipelined-load: interrupted:", err)
		return 1
	case rep.Errors > 0:
		fmt.Fprintf(stderr, "pipelined-load: FAILED: %d of %d requests were not answered as expected\n", rep.Errors, rep.Sent)
		return 1
	case rep.Requests == 0:
		fmt.Fprintln(stderr, "pipelined-load: FAILED: no correct answer inside the measured window")
		return 1
	case undrained > 0:
		return 1
	}
	return 0
}

// printReport writes the short human table.
func printReport(w io.Writer, r *Report) {
	mode := fmt.Sprintf("closed loop, %d connections", r.Connections)
	if r.Mode == "open" {
		mode = fmt.Sprintf("open loop, %.0f requests/s over at most %d connections (latency from scheduled time)", r.Rate, r.Connections)
	}
	fmt.Fprintf(w, "%s  %s\n", r.URL, mode)
	fmt.Fprintf(w, "%gs measured after %gs warmup; %d sent in all, %d duplicates", r.DurationS, r.WarmupS, r.Sent, r.DuplicatesSent)
	if r.Unsent > 0 {
		fmt.Fprintf(w, ", %d scheduled but UNSENT (server or generator too slow)", r.Unsent)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "requests/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\terrors\t")
	l := r.Latency
	fmt.Fprintf(tw, "%.1f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t\n", r.RequestsPerSec, l.P50, l.P90, l.P99, l.P999, l.Max, r.Errors)
	if s := r.SendLag; s != nil {
		fmt.Fprintf(tw, "send lag\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t\t\n", s.P50, s.P90, s.P99, s.P999, s.Max)
	}
	tw.Flush()
	if g := r.Generator; g != nil {
		fmt.Fprintf(w, "load generator: %.1f µs CPU per request sent, %.2f voluntary and %.2f involuntary context switches per request\n",
			g.CPUPerRequestUS, g.VoluntarySwitchesPerRequest, g.InvoluntarySwitchesPerRequest)
	}
	if len(r.Sinks) > 0 {
		printSinks(w, r.Sinks)
	}
}

// printSinks writes the -metrics table: lag and depth over the samples of
// the measured window, then the drain after the load.
func printSinks(w io.Writer, sinks []SinkLag) {
	fmt.Fprintln(w, "queue lag = age of the oldest queued event, over the window's samples; depth = events queued")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "sink\tsamples\tlag p50 s\tlag p99 s\tlag max s\tdepth start\tend\tmax\tgrowth\tdrain s\t")
	for _, l := range sinks {
		drain := fmt.Sprintf("%.2f", l.DrainS)
		if !l.Drained {
			drain = fmt.Sprintf("NOT DRAINED (%.1f)", l.DrainS)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.3f\t%.3f\t%d\t%d\t%d\t%+d\t%s\t\n", l.Sink, l.Samples,
			l.LagP50S, l.LagP99S, l.LagMaxS, l.DepthStart, l.DepthEnd, l.DepthMax, l.Growth, drain)
	}
	tw.Flush()
}

// bareAnswer is what the baseline answers: the shape of the daemon's answer.
var bareAnswer = []byte(`{"id":"x","duplicate":false}`)

// bareHandler is the baseline of DESIGN.md: a bare net/http handler that
// reads the body fully and answers 200 with a small JSON body.
func bareHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header()["Content-Type"] = contentTypeJSON
		w.Write(bareAnswer)
	})
}

func newBareServer() *http.Server {
	return &http.Server{Handler: bareHandler(), ReadHeaderTimeout: 10 * time.Second}
}

func cmdBare(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("bare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9090", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(stderr, "pipelined-load bare:", err)
		return 1
	}
	srv := newBareServer()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	fmt.Fprintf(stderr, "pipelined-load bare: listening on http://%s/\n", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(stderr, "pipelined-load bare:", err)
		return 1
	}
	return 0
}
