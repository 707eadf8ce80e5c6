// Package inspectortest holds what the tests of the web UI
// ([github.com/pipelined/pipelined/pipeline/inspector]) share: a
// [TailGate] that holds the live tail's writes to its connection, as a
// browser that does not read would, so that a test can make events come
// faster than the tail sends them.
package inspectortest

import (
	"net/http"
	"sync"
)

// TailGate wraps an admin handler so that, while held, the live tail's
// writes to its connection (/ui/tail/stream) wait. Its zero value is not
// usable: create it with [NewTailGate].
type TailGate struct {
	mu      sync.Mutex
	open    chan struct{} // nil: writes go through
	blocked chan struct{} // told when a write waits
}

// NewTailGate returns a gate that lets writes through until [TailGate.Hold].
func NewTailGate() *TailGate {
	return &TailGate{blocked: make(chan struct{}, 1)}
}

// Hold makes the live tail's next writes wait until [TailGate.Release].
func (g *TailGate) Hold() {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
}

// Release lets the writes that wait, and those to come, through. Calling
// it when not held does nothing.
func (g *TailGate) Release() {
	g.mu.Lock()
	if g.open != nil {
		close(g.open)
		g.open = nil
	}
	g.mu.Unlock()
}

// Blocked receives when a write has started to wait (at most one is
// remembered): the tail has taken an event and is stuck sending it.
func (g *TailGate) Blocked() <-chan struct{} { return g.blocked }

// Wrap returns h with the live tail's writes going through the gate.
func (g *TailGate) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ui/tail/stream" {
			w = &gatedWriter{ResponseWriter: w, g: g}
		}
		h.ServeHTTP(w, r)
	})
}

type gatedWriter struct {
	http.ResponseWriter
	g *TailGate
}

func (w *gatedWriter) Write(b []byte) (int, error) {
	w.g.mu.Lock()
	open := w.g.open
	w.g.mu.Unlock()
	if open != nil {
		select {
		case w.g.blocked <- struct{}{}:
		default:
		}
		<-open
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and SetWriteDeadline.
func (w *gatedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
