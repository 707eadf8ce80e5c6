package inspector

import (
	"sort"
	"time"

	"github.com/pipelined/pipelined/pipeline/metrics"
)

// sampleEvery is how often [UI.Run] reads the counters; rateWindow is how
// far back the overview's rates look.
const (
	sampleEvery = 10 * time.Second
	rateWindow  = 5 * time.Minute
)

type sample struct {
	at     time.Time
	counts metrics.Counts
}

// sourceRow is one source on the overview: its requests by outcome over
// the window.
type sourceRow struct {
	Name     string
	Total    float64
	Outcomes []outcomeCount
}

type outcomeCount struct {
	Outcome string
	N       float64
}

type rateView struct {
	window    time.Duration
	sources   []sourceRow
	delivered map[string]float64 // per minute, by sink
}

func (u *UI) sample(now time.Time) {
	if u.o.Counts == nil {
		return
	}
	c := u.o.Counts()
	u.ratesMu.Lock()
	defer u.ratesMu.Unlock()
	u.samples = append(u.samples, sample{at: now, counts: c})
	// Keep one sample older than the window, to measure from.
	for len(u.samples) > 2 && now.Sub(u.samples[1].at) >= rateWindow {
		u.samples = u.samples[1:]
	}
}

// rates compares the counters now with the oldest sample in the window
// (or just before it).
func (u *UI) rates(now time.Time) rateView {
	v := rateView{delivered: map[string]float64{}}
	if u.o.Counts == nil {
		return v
	}
	cur := u.o.Counts()
	u.ratesMu.Lock()
	base := sample{at: now}
	for _, s := range u.samples {
		if now.Sub(s.at) <= rateWindow+sampleEvery {
			base = s
			break
		}
	}
	u.ratesMu.Unlock()
	v.window = now.Sub(base.at)
	for src, outs := range cur.Requests {
		row := sourceRow{Name: src}
		if src == "" {
			row.Name = "(unknown path)"
		}
		for o, n := range outs {
			d := n - base.counts.Requests[src][o]
			if base.counts.Requests == nil {
				d = 0
			}
			if d > 0 {
				row.Outcomes = append(row.Outcomes, outcomeCount{o, d})
				row.Total += d
			}
		}
		sort.Slice(row.Outcomes, func(i, j int) bool { return row.Outcomes[i].Outcome < row.Outcomes[j].Outcome })
		v.sources = append(v.sources, row)
	}
	sort.Slice(v.sources, func(i, j int) bool { return v.sources[i].Name < v.sources[j].Name })
	if mins := v.window.Minutes(); mins > 0 && base.counts.Delivered != nil {
		for sink, n := range cur.Delivered {
			// A reload that removed the sink and added it again started
			// its counter again: count from zero then.
			since := base.counts.Delivered[sink]
			if n < since {
				since = 0
			}
			v.delivered[sink] = (n - since) / mins
		}
	}
	return v
}
