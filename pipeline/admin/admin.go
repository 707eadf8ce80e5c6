// Package admin serves the admin API on its own listener, never the ingest
// one: /healthz, /readyz, JSON under /v1/ and Go's profiler under /debug/pprof/.
package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/pprof"
)

// SinkStatus is one sink as /v1/sinks shows it.
type SinkStatus struct {
	Name string `json:"name"`
	// Plugin is the plugin's state: starting, running, backoff or stopped.
	Plugin    string `json:"plugin"`
	PID       int    `json:"pid,omitempty"`
	LastError string `json:"last_error,omitempty"`
	// Ready, Retrying and Dead count the sink's queue entries.
	Ready    int `json:"ready"`
	Retrying int `json:"retrying"`
	Dead     int `json:"dead"`
}

// Options says where the admin API gets its answers.
type Options struct {
	// Ready returns nil when the daemon is ready to serve: the log is open,
	// plugins answered, listeners are bound; else why not.
	Ready func() error
	// Sinks reports every sink.
	Sinks func(ctx context.Context) ([]SinkStatus, error)
}

// Handler returns the admin API.
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := o.Ready(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.HandleFunc("GET /v1/sinks", func(w http.ResponseWriter, r *http.Request) {
		sinks, err := o.Sinks(r.Context())
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"sinks": sinks})
	})
	// Go's profiler, for "why is it slow": the admin listener is on
	// loopback by default and never the ingest port.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
