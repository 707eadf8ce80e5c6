// Package pluginmain runs the sink plugins of this repository that take
// one batch at a time (archive, sql) as their main functions do.
package pluginmain

import (
	"os"
	"runtime"

	"github.com/pipelined/pipelined/sdk"
)

// Serve serves s as [sdk.Serve] does, on one P unless GOMAXPROCS says
// otherwise: the host sends such a sink one batch at a time, so a second P
// mostly wakes threads for gRPC's goroutines, which costs more CPU than the
// overlap saves (docs/performance.md, "Sixth round"). pipelined passes its
// plugins no GOMAXPROCS, so under the daemon they always run on one P; a
// harness that passes its own environment (package sinktest) may set it.
func Serve(s sdk.Sink) {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	sdk.Serve(s)
}
