package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketLayout(t *testing.T) {
	// Buckets tile the non-negative int64s with no gap or overlap, and no
	// bucket is wider than 1/subCount of its lowest value.
	prevHigh := int64(-1)
	for i := range numBuckets {
		lo, hi := bucketLow(i), bucketHigh(i)
		if lo != prevHigh+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHigh)
		}
		if hi < lo || (lo >= 2*subCount && hi-lo+1 > lo/subCount) {
			t.Fatalf("bucket %d = [%d, %d] is too wide", i, lo, hi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d = [%d, %d], but bucketOf gives %d and %d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		prevHigh = hi
	}
	if prevHigh != math.MaxInt64 {
		t.Fatalf("last bucket ends at %d, want MaxInt64", prevHigh)
	}
}

// exactQuantile is the nearest-rank quantile of sorted values.
func exactQuantile(sorted []int64, q float64) int64 {
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = max(rank, 1)
	return sorted[rank-1]
}

func TestHistogramQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name string
		gen  func(i int) int64 // value i of n, in nanoseconds
		n    int
		// want, when set, are exact expectations for q = .5, .9, .99, .999, 1.
		want []time.Duration
	}{
		{"constant 1ms", func(int) int64 { return 1e6 }, 1000, nil},
		{"uniform 1..100000 µs", func(i int) int64 { return int64(i+1) * 1000 }, 100000, nil},
		{"exponential mean 2ms", func(int) int64 { return int64(rng.ExpFloat64() * 2e6) }, 200000, nil},
		{"bimodal 0.2ms and 30ms tail", func(i int) int64 {
			if i%100 == 0 {
				return 30e6 + int64(rng.IntN(1e6))
			}
			return 200e3 + int64(rng.IntN(50e3))
		}, 100000, nil},
		{"small exact values", func(i int) int64 { return int64(i % 200) }, 2000, nil},
		// 1..1000 ns, once each: all below 2*subCount are exact; above,
		// the answer is the top of the bucket of the exact value.
		{"1..1000ns known", func(i int) int64 { return int64(i + 1) }, 1000,
			[]time.Duration{501, 903, 991, 999, 1000}},
	}
	qs := []float64{0.5, 0.9, 0.99, 0.999, 1}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h Histogram
			vals := make([]int64, tc.n)
			var sum float64
			for i := range vals {
				vals[i] = tc.gen(i)
				sum += float64(vals[i])
				h.Record(time.Duration(vals[i]))
			}
			slices.Sort(vals)
			if h.Count() != int64(tc.n) || h.Max() != time.Duration(vals[len(vals)-1]) {
				t.Fatalf("count %d max %v, want %d %v", h.Count(), h.Max(), tc.n, time.Duration(vals[len(vals)-1]))
			}
			if mean := float64(h.Mean()); math.Abs(mean-sum/float64(tc.n)) > 1 {
				t.Errorf("mean %v, want %v", mean, sum/float64(tc.n))
			}
			for j, q := range qs {
				exact := exactQuantile(vals, q)
				got := int64(h.Quantile(q))
				// Never below the exact value, at most one bucket width above.
				if got < exact || got > exact+exact/subCount {
					t.Errorf("q%.3f = %d, exact %d (allowed up to %d)", q, got, exact, exact+exact/subCount)
				}
				if tc.want != nil && time.Duration(got) != tc.want[j] {
					t.Errorf("q%.3f = %d, want %d", q, got, tc.want[j])
				}
			}
		})
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b, all Histogram
	for i := range 10000 {
		d := time.Duration(i) * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	var empty Histogram
	a.Merge(&empty)
	a.Merge(&b)
	if a != all {
		t.Fatalf("merged histogram differs from one recording everything")
	}
	if empty.Quantile(0.5) != 0 || empty.Max() != 0 || empty.Mean() != 0 {
		t.Fatalf("empty histogram reports non-zero")
	}
}
