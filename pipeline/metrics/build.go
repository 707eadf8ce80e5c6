package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// RegisterProcess registers the Go runtime's collector (go_*) and the
// process's (process_*: process_start_time_seconds tells restarts apart,
// process_resident_memory_bytes the memory) in reg.
func RegisterProcess(reg prometheus.Registerer) {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// RegisterBuildInfo registers pipelined_build_info{version,commit,goversion},
// a gauge that is always 1: the labels say which build runs, so that a
// dashboard can join any other series to it.
func RegisterBuildInfo(reg prometheus.Registerer, version, commit, goversion string) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "pipelined_build_info",
		Help:        "Always 1; its labels name the running build: version, VCS commit and Go version.",
		ConstLabels: prometheus.Labels{"version": version, "commit": commit, "goversion": goversion},
	}, func() float64 { return 1 }))
}
