// Package stacks lets a test wait until goroutines of its own process have
// reached a blocking point, read from their stacks: the premise of a test
// that acts on a call in flight (a kill, a shutdown), which a sleep can only
// hope for on a loaded machine.
package stacks

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// WaitBlocked waits up to 10 s until n goroutines are blocked in a select
// or on a channel inside the function fn ("pkg.(*T).Method", as stacks
// print it), and fails the test if they are not.
func WaitBlocked(t testing.TB, fn string, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(10 * time.Second)
	for {
		blocked := count(&buf, fn)
		if blocked >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutine(s) blocked in %s after 10s, want %d", blocked, fn, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// count counts the goroutines blocked in a select or on a channel inside
// fn now, reading every stack into *buf (grown when too small).
func count(buf *[]byte, fn string) int {
	n := runtime.Stack(*buf, true)
	for n == len(*buf) {
		*buf = make([]byte, 2*len(*buf))
		n = runtime.Stack(*buf, true)
	}
	blocked := 0
	for _, g := range strings.Split(string((*buf)[:n]), "\n\n") {
		head, _, _ := strings.Cut(g, "\n")
		if strings.Contains(g, fn+"(") && (strings.Contains(head, "[select") || strings.Contains(head, "[chan ")) {
			blocked++
		}
	}
	return blocked
}
