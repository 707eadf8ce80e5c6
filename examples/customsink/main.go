// Command pipelined-sink-csv is a complete third-party sink for pipelined,
// in one file: it appends one CSV row per event (id, received_at, source,
// route, attempt, payload) to a file, and fsyncs before it answers
// delivered. See README.md for the tutorial that builds it.
package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"time"

	"github.com/pipelined/pipelined/sdk"
)

func main() { sdk.Serve(&csvSink{}) }

// csvSink appends events to a CSV file. The host never calls it
// concurrently, so it needs no lock.
type csvSink struct {
	cfg  config
	file *os.File // opened by the first Deliver
}

// config is the one description of the sink's config: its tags say what
// each key is, and defaults() its default values.
type config struct {
	Path   string `json:"path" required:"true" doc:"The CSV file; created when missing, appended to otherwise."`
	Header bool   `json:"header" doc:"Write a header row when the file is new."`
}

func defaults() config { return config{Header: true} }

// Describe lets `pipelined check` validate the config table and
// `pipelined plugins describe csv` print it.
func (s *csvSink) Describe() sdk.Description {
	return sdk.DescribeConfig("Appends one CSV row per event to a file.", defaults())
}

// Configure decodes and validates the config: cheap, no side effects.
func (s *csvSink) Configure(_ context.Context, raw json.RawMessage) error {
	cfg := defaults()
	if err := sdk.DecodeConfig(raw, &cfg); err != nil {
		return err // names every unknown key, bad value and missing required key
	}
	if cfg.Path == "" {
		return errors.New(`config key "path" is empty: set it to a file, e.g. path = "data/events.csv"`)
	}
	s.cfg = cfg
	return nil
}

// Deliver appends the batch and fsyncs; only then are the events delivered.
func (s *csvSink) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // the host retries the whole batch
	}
	newFile := false
	if s.file == nil {
		f, err := os.OpenFile(s.cfg.Path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
		if err != nil {
			return nil, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		s.file, newFile = f, fi.Size() == 0
	}
	w := csv.NewWriter(s.file)
	if newFile && s.cfg.Header {
		w.Write([]string{"id", "received_at", "source", "route", "attempt", "payload"})
	}
	for _, ev := range batch {
		// Events can come again (Attempt > 1): a reader dedupes by id.
		w.Write([]string{ev.ID, ev.ReceivedAt.UTC().Format(time.RFC3339Nano), ev.Source, ev.Route,
			strconv.Itoa(ev.Attempt), string(ev.Payload())})
	}
	w.Flush()
	if err := errors.Join(w.Error(), s.file.Sync()); err != nil {
		return nil, err
	}
	return nil, nil // nil results: every event delivered
}

// Close releases the file; the host calls it last.
func (s *csvSink) Close(context.Context) error {
	if s.file == nil {
		return nil
	}
	err := s.file.Close()
	s.file = nil
	return err
}
