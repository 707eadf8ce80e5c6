package protocol

import (
	"context"
	"errors"

	"github.com/pipelined/pipelined/sdk"
)

// ErrNotDescribed is returned by [DescribeClient.DescribeSink] when the
// plugin's sink does not implement [sdk.Describer], or the plugin was built
// with an sdk older than Describe. It is not a failure: the host then skips
// the check of the config table and leaves it to the sink's Configure.
var ErrNotDescribed = errors.New("sink does not describe its config")

// ErrBatchTooLarge is returned (wrapped) by the Deliver of a dispensed sink
// when gRPC refused the request or its answer for being over its message
// size limit (4 MiB by default): the batch never reached the sink, or its
// answer never came back. It says nothing about the events themselves: the
// caller splits the batch and sends the parts on their own, and fails an
// event permanently only when it is too large alone.
var ErrBatchTooLarge = errors.New("batch is too large for the plugin protocol")

// ErrNoWrapUp is returned by [WrapUpClient.WrapUp] when the plugin
// does not know the call: it was built before WrapUp existed (or is a
// plugin in another language that does not serve it). It is not a
// failure: the host then waits for the Deliver in flight as before.
var ErrNoWrapUp = errors.New("plugin does not know WrapUp")

// errAsServer is what the host's plugin glue answers if go-plugin ever asks
// it to serve.
var errAsServer = errors.New("package protocol dispenses sinks only: serve a sink with sdk.Serve")

// DescribeClient is implemented by the host's view of a plugin: the
// [sdk.Sink] dispensed from a go-plugin client made with [ClientPlugins]
// (and the one sinktest.Serve returns). It asks the plugin process for its
// sink's [sdk.Description] over the wire.
type DescribeClient interface {
	// DescribeSink returns the plugin's description, or an error that is
	// [ErrNotDescribed] when it has none. Other errors mean the call
	// failed (the plugin exited, ctx expired). It may be called before
	// Configure; ctx limits the call.
	DescribeSink(ctx context.Context) (sdk.Description, error)
}

// WrapUpClient is implemented by the host's view of a plugin (the
// [sdk.Sink] dispensed from a go-plugin client made with [ClientPlugins]).
type WrapUpClient interface {
	// WrapUp asks the plugin to wrap up its Deliver calls in flight: their
	// sink's ctx ends with [sdk.ErrWrapUp] and each call answers for what
	// it did, on the call itself. It may be called while a Deliver is in
	// flight (it is a call of its own); it returns how many calls were
	// asked, or [ErrNoWrapUp] when the plugin does not know the call.
	// ctx limits the call.
	WrapUp(ctx context.Context) (calls int, err error)
}
