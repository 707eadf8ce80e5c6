package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pipelined/pipelined/sdk"
)

// countSink is a sink that counts calls per source; its config names a
// source to refuse. A real sink writes somewhere durable before it answers
// Delivered.
type countSink struct {
	cfg    countConfig
	counts map[string]int
}

type countConfig struct {
	Refuse   string `json:"refuse"`
	MaxBytes int    `json:"max_bytes"`
}

// Configure sets defaults, decodes strictly and validates; no side effects.
func (s *countSink) Configure(_ context.Context, raw json.RawMessage) error {
	cfg := countConfig{MaxBytes: 1 << 20}
	if err := sdk.DecodeConfig(raw, &cfg); err != nil {
		return err
	}
	if cfg.MaxBytes <= 0 {
		return fmt.Errorf(`config key "max_bytes" = %d must be positive, e.g. 1048576`, cfg.MaxBytes)
	}
	s.cfg = cfg
	s.counts = map[string]int{}
	return nil
}

// Deliver answers one Result per event, in order.
func (s *countSink) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // the whole batch is retried
	}
	results := make([]sdk.Result, len(batch))
	for i, ev := range batch {
		switch {
		case ev.Source == s.cfg.Refuse:
			results[i] = sdk.Permanent(fmt.Errorf("source %q is refused", ev.Source))
		case len(ev.Payload()) > s.cfg.MaxBytes:
			results[i] = sdk.Retry(time.Minute, errors.New("payload too large for now"))
		default:
			s.counts[ev.Source]++
			results[i] = sdk.Delivered()
		}
	}
	return results, nil
}

// Example shows a whole sink: its main would be just
// `func main() { sdk.Serve(&countSink{}) }`. Here the host's calls are made
// directly; package sinktest makes them over the real protocol.
func Example() {
	s := &countSink{}
	ctx := context.Background()
	if err := s.Configure(ctx, json.RawMessage(`{"refuse": "spam", "max_bytes": 32}`)); err != nil {
		fmt.Println("configure:", err)
		return
	}
	batch := []sdk.Event{
		{ID: "e1", Source: "callkaro", Body: json.RawMessage(`{"event":"call_ended"}`)},
		{ID: "e2", Source: "spam", Body: json.RawMessage(`{}`)},
		{ID: "e3", Source: "callkaro", Body: json.RawMessage(`{"event":"call_ended"}`),
			Transformed: json.RawMessage(`{"text":"` + strings.Repeat("x", 40) + `"}`)},
	}
	results, err := s.Deliver(ctx, batch)
	if err != nil {
		fmt.Println("deliver:", err)
		return
	}
	for i, r := range results {
		fmt.Printf("%s: %v\n", batch[i].ID, r)
	}
	// Output:
	// e1: delivered
	// e2: permanent: source "spam" is refused
	// e3: retry after 1m0s: payload too large for now
}

// ExampleDecodeConfig shows defaults set before decoding, and the errors a
// typo or a wrong type gives: each names the key.
func ExampleDecodeConfig() {
	type config struct {
		Dir    string `json:"dir"`
		Rotate string `json:"rotate"`
		Keep   int    `json:"keep"`
	}
	cfg := config{Rotate: "1h", Keep: 7} // defaults first
	err := sdk.DecodeConfig(json.RawMessage(`{"dir": "data/archive", "keep": 30}`), &cfg)
	fmt.Printf("%+v %v\n", cfg, err)

	fmt.Println(sdk.DecodeConfig(json.RawMessage(`{"dri": "data/archive"}`), &cfg))
	fmt.Println(sdk.DecodeConfig(json.RawMessage(`{"keep": "thirty"}`), &cfg))
	// Output:
	// {Dir:data/archive Rotate:1h Keep:30} <nil>
	// unknown config key "dri": check its spelling (valid keys: dir, keep, rotate)
	// config key "keep": want int, got string
}

// ExampleEvent_Payload shows what a sink should deliver: the route's
// transform when it has one, else the webhook body.
func ExampleEvent_Payload() {
	ev := sdk.Event{Body: json.RawMessage(`{"event":"call_ended"}`)}
	fmt.Println(string(ev.Payload()))
	ev.Transformed = json.RawMessage(`{"text":"Interested lead"}`)
	fmt.Println(string(ev.Payload()))
	// Output:
	// {"event":"call_ended"}
	// {"text":"Interested lead"}
}

// spoolSink shows the optional Describer interface: the host reads the
// description before Configure, so `pipelined check` can report every
// problem of a [[sink]] config table, and `pipelined plugins describe`
// prints it.
type spoolSink struct{ countSink }

// Describe lists the config keys. A secret is described by its base name;
// the config then sets token_env or token_file, never token itself.
func (spoolSink) Describe() sdk.Description {
	return sdk.Description{
		Summary: "Spools events to files in a directory.",
		Fields: []sdk.Field{
			{Name: "dir", Type: "string", Required: true, Doc: "Directory of the spool files."},
			{Name: "rotate", Type: "duration", Default: `"1h"`, Doc: "Age at which a file is rotated."},
			{Name: "max_size", Type: "size", Default: `"64MiB"`, Doc: "Size at which a file is rotated."},
			{Name: "token", Type: "string", Secret: true, Doc: "Signs each file."},
		},
	}
}

var _ sdk.Describer = (*spoolSink)(nil)

// ExampleDescriber shows a description and the problems Check finds in a
// config table, as `pipelined check` reports them before the plugin is
// configured.
func ExampleDescriber() {
	var s sdk.Sink = &spoolSink{}
	d, ok := s.(sdk.Describer) // the host finds the interface the same way
	if !ok {
		return
	}
	desc := d.Describe()
	fmt.Println(desc.Summary)
	for _, f := range desc.Fields {
		fmt.Printf("%-8s %-8s %-7s required=%v secret=%v\n", f.Name, f.Type, f.Default, f.Required, f.Secret)
	}

	config := json.RawMessage(`{"rotate": "hourly", "max_size": "64MiB", "token": "s3cr3t", "dri": "spool"}`)
	for _, err := range desc.Check(config) {
		fmt.Println(err)
	}
	fmt.Println(desc.Check(json.RawMessage(`{"dir": "spool", "token_env": "SPOOL_TOKEN"}`)))
	// Output:
	// Spools events to files in a directory.
	// dir      string           required=true secret=false
	// rotate   duration "1h"    required=false secret=false
	// max_size size     "64MiB" required=false secret=false
	// token    string           required=false secret=true
	// config key "dir" is required: Directory of the spool files
	// config key "rotate": invalid duration "hourly" (write e.g. "30s", "24h" or "7d")
	// token is a secret: set token_env or token_file, never inline
	// unknown config key "dri": check its spelling (valid keys: dir, max_size, rotate, token_env, token_file)
	// []
}

// ExampleSecret shows a sink reading a secret named by its config: from an
// environment variable (token_env) or a file (token_file).
func ExampleSecret() {
	var cfg struct {
		TokenEnv  string `json:"token_env"`
		TokenFile string `json:"token_file"`
	}
	_ = sdk.DecodeConfig(json.RawMessage(`{"token_env": "EXAMPLE_SPOOL_TOKEN"}`), &cfg)

	os.Setenv("EXAMPLE_SPOOL_TOKEN", "s3cr3t")
	defer os.Unsetenv("EXAMPLE_SPOOL_TOKEN")
	token, err := sdk.Secret("token", cfg.TokenEnv, cfg.TokenFile)
	fmt.Println(len(token), err) // never print or log the secret itself

	_, err = sdk.Secret("token", "", "")
	fmt.Println(err)
	_, err = sdk.Secret("token", "NO_SUCH_VARIABLE_HERE", "")
	fmt.Println(err)
	// Output:
	// 6 <nil>
	// token is required: set token_env (an environment variable) or token_file (a file); never write it inline
	// token_env: environment variable NO_SUCH_VARIABLE_HERE is not set (or empty) for the daemon
}

// ExampleSize shows sizes and durations as config field types: strings with
// units, decoded and checked by DecodeConfig.
func ExampleSize() {
	cfg := struct {
		MaxSize sdk.Size     `json:"max_size"`
		Rotate  sdk.Duration `json:"rotate"`
	}{MaxSize: 64 << 20, Rotate: sdk.Duration(time.Hour)} // defaults
	err := sdk.DecodeConfig(json.RawMessage(`{"max_size": "512KiB", "rotate": "1d12h"}`), &cfg)
	fmt.Println(int64(cfg.MaxSize), time.Duration(cfg.Rotate), err)

	fmt.Println(sdk.DecodeConfig(json.RawMessage(`{"max_size": "big"}`), &cfg))
	// Output:
	// 524288 36h0m0s <nil>
	// config key "max_size": invalid size "big" (write e.g. "64MiB", "512KiB", "1GB" or a number of bytes)
}

func ExampleParseSize() {
	for _, s := range []string{"64MiB", "1GB", "1.5KiB", "1000"} {
		n, err := sdk.ParseSize(s)
		fmt.Println(s, n, err)
	}
	// Output:
	// 64MiB 67108864 <nil>
	// 1GB 1000000000 <nil>
	// 1.5KiB 1536 <nil>
	// 1000 1000 <nil>
}

// ExampleNotAttempted answers a batch the way a sink that calls a rate
// limited API does: the first event got a 429, so the rest were not sent.
// They cost no attempt toward max_attempts and wait the same Retry-After.
func ExampleNotAttempted() {
	retryAfter := 30 * time.Second
	results := []sdk.Result{
		sdk.Delivered(),
		sdk.Retry(retryAfter, errors.New("429 Too Many Requests")),
		sdk.NotAttempted(retryAfter, errors.New("not sent: throttled earlier in the batch")),
		sdk.NotAttempted(0, errors.New("not sent: the call's time ran out")),
	}
	for _, r := range results {
		_, retry := r.IsRetry()
		after, notAttempted := r.IsNotAttempted()
		fmt.Printf("%v | retry=%v not_attempted=%v after=%v\n", r, retry, notAttempted, after)
	}
	// Output:
	// delivered | retry=false not_attempted=false after=0s
	// retry after 30s: 429 Too Many Requests | retry=true not_attempted=false after=30s
	// not attempted, again after 30s: not sent: throttled earlier in the batch | retry=false not_attempted=true after=30s
	// not attempted: not sent: the call's time ran out | retry=false not_attempted=true after=0s
}

func ExampleParseDuration() {
	for _, s := range []string{"250ms", "24h", "7d", "1d12h", "-1s"} {
		d, err := sdk.ParseDuration(s)
		fmt.Println(s, d, err)
	}
	// Output:
	// 250ms 250ms <nil>
	// 24h 24h0m0s <nil>
	// 7d 168h0m0s <nil>
	// 1d12h 36h0m0s <nil>
	// -1s 0s negative duration "-1s" (write e.g. "30s", "24h" or "7d")
}

// ExampleDescribeConfig describes a config once, as a struct: the same
// struct and defaults give the description the host checks configs
// against, and the decoding Configure does (secrets included).
func ExampleDescribeConfig() {
	type config struct {
		URL     string       `json:"url" required:"true" doc:"Where events go."`
		Timeout sdk.Duration `json:"timeout" doc:"Limit for one request."`
		Token   string       `json:"token" secret:"true" doc:"API token, from token_env or token_file."`
	}
	defaults := func() config { return config{Timeout: sdk.Duration(10 * time.Second)} }

	for _, f := range sdk.DescribeConfig("Posts events to a URL.", defaults()).Fields {
		fmt.Printf("%s %s default=%s required=%v secret=%v\n", f.Name, f.Type, f.Default, f.Required, f.Secret)
	}

	os.Setenv("EXAMPLE_API_TOKEN", "s3cret")
	cfg := defaults()
	err := sdk.DecodeConfig(json.RawMessage(`{"url": "https://example.com/hook", "token_env": "EXAMPLE_API_TOKEN"}`), &cfg)
	fmt.Println(cfg.URL, time.Duration(cfg.Timeout), cfg.Token == "s3cret", err)

	cfg = defaults()
	fmt.Println(sdk.DecodeConfig(json.RawMessage(`{"token": "inline"}`), &cfg))
	// Output:
	// url string default= required=true secret=false
	// timeout duration default="10s" required=false secret=false
	// token string default= required=false secret=true
	// https://example.com/hook 10s true <nil>
	// config key "token" must not be written inline: it is a secret, never put it in the config; set token_env (an environment variable) or token_file (a file) instead
	// config key "url" is required: Where events go
}
