package sinktest

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"testing"

	"github.com/pipelined/pipelined/sdk"
)

// guard wraps the sink under test on the plugin side of the wire: a panic
// in one of its methods, which would otherwise kill the whole test binary
// from a gRPC server goroutine without naming the test, fails the test
// that made the call instead, with the panic's value and stack, and the
// call returns an error to the host side.
type guard struct {
	sdk.Sink
	t testing.TB
}

// describingGuard is a guard for a sink that is an sdk.Describer (the
// server finds the interface by type assertion).
type describingGuard struct{ *guard }

// guarded wraps s for the test t.
func guarded(t testing.TB, s sdk.Sink) sdk.Sink {
	g := &guard{Sink: s, t: t}
	if _, ok := s.(sdk.Describer); ok {
		return describingGuard{g}
	}
	return g
}

// recovered turns a panic into a failure of g's test and an error; call it
// deferred.
func (g *guard) recovered(method string, err *error) {
	v := recover()
	if v == nil {
		return
	}
	// t.Errorf, not t.Fatalf: this runs on a gRPC server goroutine.
	g.t.Errorf("%s.%s panicked: %v\n%s", sinkType(g.Sink), method, v, debug.Stack())
	*err = fmt.Errorf("sinktest: %s panicked: %v (the stack is in the test's failure)", method, v)
}

func (g *guard) Configure(ctx context.Context, config json.RawMessage) (err error) {
	defer g.recovered("Configure", &err)
	return g.Sink.Configure(ctx, config)
}

func (g *guard) Deliver(ctx context.Context, batch []sdk.Event) (results []sdk.Result, err error) {
	defer g.recovered("Deliver", &err)
	return g.Sink.Deliver(ctx, batch)
}

// Close closes the sink when it is an sdk.Closer.
func (g *guard) Close(ctx context.Context) (err error) {
	defer g.recovered("Close", &err)
	if c, ok := g.Sink.(sdk.Closer); ok {
		return c.Close(ctx)
	}
	return nil
}

func (g describingGuard) Describe() (d sdk.Description) {
	defer func() {
		if v := recover(); v != nil {
			g.t.Errorf("%s.Describe panicked: %v\n%s", sinkType(g.Sink), v, debug.Stack())
			d = sdk.Description{} // invalid: the Describe check says so too
		}
	}()
	return g.Sink.(sdk.Describer).Describe()
}

// sinkType names the type of the author's sink, under the suite's recorder.
func sinkType(s sdk.Sink) string {
	if r, ok := s.(interface{ recorded() *recorder }); ok {
		s = r.recorded().Sink
	}
	return fmt.Sprintf("%T", s)
}
