package main

import (
	"math"
	"math/bits"
	"time"
)

// Histogram records durations (in nanoseconds) into a fixed log-linear
// bucket layout, in the manner of HdrHistogram: values below 2*subCount are
// counted exactly; above that, every power-of-two range [2^k, 2^(k+1)) is cut
// into subCount equal sub-buckets. A recorded value v therefore lands in a
// bucket no wider than v/subCount, so a reported percentile is at most
// 1/subCount (0.8%) above the true one and never below it. Recording is an
// array increment: no allocation, no sorting, and the memory is the same
// (numBuckets counters, ~57 KiB) whether one request or a billion is recorded.
// The zero value is ready to use. A Histogram is not safe for concurrent use:
// each worker keeps its own and they are merged at the end.
type Histogram struct {
	counts [numBuckets]int64
	n      int64
	sum    float64 // nanoseconds; float so it cannot overflow
	min    int64
	max    int64
}

const (
	subBits  = 7
	subCount = 1 << subBits // sub-buckets per power of two
	// numBuckets covers every non-negative int64: the largest value has
	// bits.Len64 = 63, hence shift 63-subBits-1 and index shift*subCount+255.
	numBuckets = (64 - subBits) * subCount
)

// bucketOf returns the index of the bucket holding v (v < 0 counts as 0).
func bucketOf(v int64) int {
	if v < 2*subCount {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBits - 1
	// The top subBits+1 bits of v, in [subCount, 2*subCount).
	return shift*subCount + int(uint64(v)>>uint(shift))
}

// bucketLow and bucketHigh are the smallest and largest values that land in
// bucket i.
func bucketLow(i int) int64 {
	if i < 2*subCount {
		return int64(i)
	}
	shift := i/subCount - 1
	return int64(i-shift*subCount) << uint(shift)
}

func bucketHigh(i int) int64 {
	if i < 2*subCount {
		return int64(i)
	}
	shift := i/subCount - 1
	return bucketLow(i) + (int64(1) << uint(shift)) - 1
}

// Record adds one observation.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Merge adds every observation of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Count is the number of observations.
func (h *Histogram) Count() int64 { return h.n }

// Max is the largest observation, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean is the exact mean of the observations.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Quantile returns the q-quantile (0 <= q <= 1) by nearest rank: the
// smallest recorded value such that at least q of the observations are at
// or below it, rounded up to the top of its bucket (and capped at the exact
// maximum). It is 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	if rank >= h.n {
		return time.Duration(h.max)
	}
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(bucketHigh(i), h.max))
		}
	}
	return time.Duration(h.max)
}
