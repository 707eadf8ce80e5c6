package sinktest

import (
	"context"
	"slices"
	"sync"

	"github.com/pipelined/pipelined/sdk"
)

// recorder wraps the sink under test on the plugin side of the wire and
// keeps what its Deliver returned, so the suite can compare it with what
// the host received.
type recorder struct {
	sdk.Sink

	mu      sync.Mutex
	results []sdk.Result
}

// describingRecorder is a recorder for a sink that is an sdk.Describer:
// the server finds the interface by type assertion, so the wrapper must
// have it exactly when the sink does.
type describingRecorder struct{ *recorder }

func (r describingRecorder) Describe() sdk.Description { return r.Sink.(sdk.Describer).Describe() }

func (r *recorder) recorded() *recorder          { return r }
func (r describingRecorder) recorded() *recorder { return r.recorder }

// record wraps s.
func record(s sdk.Sink) sdk.Sink {
	r := &recorder{Sink: s}
	if _, ok := s.(sdk.Describer); ok {
		return describingRecorder{r}
	}
	return r
}

func (r *recorder) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	results, err := r.Sink.Deliver(ctx, batch)
	r.mu.Lock()
	r.results = slices.Clone(results)
	r.mu.Unlock()
	return results, err
}

// Close closes the sink when it is an sdk.Closer; for one that is not,
// the server's Close does nothing either.
func (r *recorder) Close(ctx context.Context) error {
	if c, ok := r.Sink.(sdk.Closer); ok {
		return c.Close(ctx)
	}
	return nil
}

// last returns the results of the last Deliver.
func (r *recorder) last() []sdk.Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.results
}
