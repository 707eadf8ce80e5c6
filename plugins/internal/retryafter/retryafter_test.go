package retryafter_test

import (
	"bufio"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/plugins/internal/retryafter"
)

// now is the "now" of testdata/cases.txt: Fri, 02 Jan 2026 03:04:05 GMT.
var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type testCase struct {
	name  string
	value string
	want  time.Duration
	ok    bool
}

// readCases reads testdata/cases.txt: per line a name, a Go quoted value,
// a duration and a bool; blank lines and # comments are skipped.
func readCases(t testing.TB) []testCase {
	t.Helper()
	f, err := os.Open("testdata/cases.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []testCase
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		quoted, err := strconv.QuotedPrefix(rest)
		if err != nil {
			t.Fatalf("testdata/cases.txt:%d: value: %v", n, err)
		}
		value, _ := strconv.Unquote(quoted)
		fields := strings.Fields(rest[len(quoted):])
		if len(fields) != 2 {
			t.Fatalf("testdata/cases.txt:%d: want a duration and a bool after the value, got %q", n, fields)
		}
		want, err := time.ParseDuration(fields[0])
		if err != nil {
			t.Fatalf("testdata/cases.txt:%d: %v", n, err)
		}
		ok, err := strconv.ParseBool(fields[1])
		if err != nil {
			t.Fatalf("testdata/cases.txt:%d: %v", n, err)
		}
		cases = append(cases, testCase{name, value, want, ok})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

func TestParse(t *testing.T) {
	cases := readCases(t)
	if len(cases) < 30 {
		t.Fatalf("testdata/cases.txt gave %d cases, want them all (30 or more)", len(cases))
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := retryafter.Parse(tt.value, now, 24*time.Hour)
			if got != tt.want || ok != tt.ok {
				t.Errorf("Parse(%q) = %v, %t; want %v, %t", tt.value, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestParseMax(t *testing.T) {
	ahead := now.Add(time.Minute).Format(http.TimeFormat)
	tests := []struct {
		name  string
		value string
		max   time.Duration
		want  time.Duration
	}{
		{"seconds under max", "5", 10 * time.Second, 5 * time.Second},
		{"seconds over max", "60", 10 * time.Second, 10 * time.Second},
		{"date over max", ahead, 10 * time.Second, 10 * time.Second},
		{"max not whole seconds", "2", 1500 * time.Millisecond, 1500 * time.Millisecond},
		{"max zero", "5", 0, 0},
		{"max negative", ahead, -time.Second, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, ok := retryafter.Parse(tt.value, now, tt.max); got != tt.want || !ok {
				t.Errorf("Parse(%q, max %v) = %v, %t; want %v, true", tt.value, tt.max, got, ok, tt.want)
			}
		})
	}
}

// FuzzParse: whatever the value, the wait is within [0, max], a refused
// value gives 0, and digits alone are always taken.
func FuzzParse(f *testing.F) {
	for _, tt := range readCases(f) {
		f.Add(tt.value, int64(24*time.Hour))
	}
	f.Fuzz(func(t *testing.T, value string, limit int64) {
		got, ok := retryafter.Parse(value, now, time.Duration(limit))
		if got < 0 || got > time.Duration(max(limit, 0)) {
			t.Errorf("Parse(%q, max %v) = %v, outside [0, max]", value, time.Duration(limit), got)
		}
		if !ok && got != 0 {
			t.Errorf("Parse(%q) = %v, false; want 0 when false", value, got)
		}
		if v := strings.TrimSpace(value); v != "" && strings.Trim(v, "0123456789") == "" && !ok {
			t.Errorf("Parse(%q) = %v, false; want delay-seconds taken", value, got)
		}
	})
}
