package rules

import (
	"encoding/json"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// floats are float64s where shortest decimals and exact values part:
// around each bound, powers of two and ten, whole numbers near 2⁵³, and
// random bit patterns.
func floats(bounds []*big.Rat) []float64 {
	var out []float64
	add := func(f float64) {
		for _, g := range []float64{f, -f, math.Nextafter(f, math.Inf(1)), math.Nextafter(f, math.Inf(-1))} {
			if !math.IsNaN(g) && !math.IsInf(g, 0) {
				out = append(out, g)
			}
		}
	}
	for _, r := range bounds {
		f, _ := r.Float64()
		add(f)
	}
	for e := -1074; e <= 1023; e += 7 {
		add(math.Ldexp(1, e))
	}
	for e := -330; e <= 310; e += 3 {
		add(math.Pow(10, float64(e)))
	}
	for d := -3.0; d <= 3; d++ {
		add(maxExact + d)
		add(maxExact/2 + d + 0.5)
	}
	rng := rand.New(rand.NewPCG(19, 2026))
	for range 4000 {
		add(math.Float64frombits(rng.Uint64()))
		add(float64(rng.Int64N(1<<60)) / float64(int64(1)<<rng.IntN(62)))
	}
	return out
}

// numbersAround reads texts as exact numbers (bounds) and returns them
// with the floats around them (xs) and the exact value the library reads
// each of those as (ds[i] for xs[i]).
func numbersAround(texts ...string) (bounds []*big.Rat, xs []float64, ds []*big.Rat) {
	for _, s := range texts {
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			panic("numbersAround: not a number: " + s)
		}
		bounds = append(bounds, r)
	}
	xs = floats(bounds)
	ds = make([]*big.Rat, len(xs))
	for i, x := range xs {
		ds[i] = decimal(x)
	}
	return bounds, xs, ds
}

// TestBoundIsLibraryCompare holds bound.cmp to what the library computes
// (Sprint(x) read as an exact decimal, compared with the bound).
func TestBoundIsLibraryCompare(t *testing.T) {
	bounds, xs, ds := numbersAround("0", "0.1", "-0.1", "1e-400", "-1e-400", "1e400", "3", "0.30000000000000004",
		"9007199254740993", "9007199254740992", "-9007199254740993", "1e23", "100000000000000000000001",
		"0.1000000000000000055511151231257827021181583404541015625", "5e-324", "2.5e-324", "1.7976931348623157e308")
	for _, r := range bounds {
		b := newBound(r)
		for i, x := range xs {
			if got, want := b.cmp(x), ds[i].Cmp(r); got != want {
				t.Fatalf("bound %s: cmp(%v) = %d, the library's %d", r.RatString(), x, got, want)
			}
		}
	}
}

// TestIntegralIsLibrary holds integral, and the int64 remainder number
// takes below 2⁵³, to the library's exact decimals.
func TestIntegralIsLibrary(t *testing.T) {
	for _, x := range floats(nil) {
		d := decimal(x)
		if integral(x) != d.IsInt() {
			t.Fatalf("integral(%v) = %v, the library's %v", x, integral(x), d.IsInt())
		}
		if integral(x) && math.Abs(x) < maxExact && d.Cmp(new(big.Rat).SetInt64(int64(x))) != 0 {
			t.Fatalf("%v: Sprint reads as %s, not %d", x, d.RatString(), int64(x))
		}
	}
}

// TestSchemaValueEqual holds equal on numbers to the library's equality:
// Sprint(x) equal to the exact value of the schema's number.
func TestSchemaValueEqual(t *testing.T) {
	texts := []string{"0", "0.1", "1e23", "1e400", "9007199254740993", "0.30000000000000004", "0.3", "2.5e-324"}
	bounds, xs, ds := numbersAround(texts...)
	for i, r := range bounds {
		n, ok := schemaValue(json.Number(texts[i]))
		if !ok {
			t.Fatalf("schemaValue(%s) refused", texts[i])
		}
		for j, x := range xs {
			eq, ok := equal(x, n)
			if want := ds[j].Cmp(r) == 0; !ok || eq != want {
				t.Fatalf("equal(%v, %s) = %v, %v; the library's %v", x, r.RatString(), eq, ok, want)
			}
		}
	}
}
