package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/rulestest"
)

const testUsage = `usage: pipelined test [-c pipeline.toml] [-v] [-run REGEXP] [FILES...]

Runs the rule test cases of FILES against the configuration: each case is
a request in (source, headers, body) and what pipelined must do with it
out (expect_status, expect_routes, expect_sinks, expect_transform,
expect_dedup_key, expect_duplicate_of). Without FILES, it runs
<config dir>/*_test.toml and <config dir>/tests/*.toml.

  -c FILE       configuration file (default ./pipeline.toml, else the built-in default)
  -v            print every case, not only those that fail
  -run REGEXP   run only the cases whose name matches REGEXP

It needs neither the admin token nor the server's TLS files, nor the
secret of a source no case signs for: a request to such a source is
refused 401, naming the secret to set in the test file's env.

It exits 0 when every case passes, 1 when one fails or a test file is
wrong, 78 (EX_CONFIG) when the configuration is wrong, 2 on a usage error.
The file format is documented in package pipeline/rulestest.
`

// testCmd runs `pipelined test`.
func testCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	var cfgFile, run string
	var verbose bool
	fs.StringVar(&cfgFile, "c", "", "configuration `file`")
	fs.StringVar(&cfgFile, "config", "", "configuration `file` (same as -c)")
	fs.BoolVar(&verbose, "v", false, "print every case")
	fs.StringVar(&run, "run", "", "run only the cases whose name matches `regexp`")
	files, err := parseInterspersed(fs, args)
	if err == flag.ErrHelp {
		fmt.Fprint(stdout, testUsage)
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "run pipelined test -h for usage")
		return 2
	}
	var match func(string) bool
	if run != "" {
		re, err := regexp.Compile(run)
		if err != nil {
			fmt.Fprintf(stderr, "pipelined test: -run: %v\n", err)
			return 2
		}
		match = re.MatchString
	}
	c := &common{config: cfgFile}
	quiet := slog.New(slog.DiscardHandler)
	// Rule tests run in a CI without production secrets: neither the admin
	// token nor the secrets of sources no case signs for are needed.
	load := func() (*config.Config, error) {
		return c.loadWith(quiet, config.ParseOptions{SecretsOptional: true})
	}

	if len(files) == 0 {
		var err error
		if files, err = testFiles(cfgFile); err != nil {
			fmt.Fprintf(stderr, "pipelined test: %v\n", err)
			return 1
		}
	}

	failed := false
	for _, file := range files {
		f, err := rulestest.Parse(file)
		if err != nil {
			fmt.Fprintf(stdout, "%v\nFAIL\t%s\t[test file is wrong]\n", err, file)
			failed = true
			continue
		}
		suite, err := rulestest.Load(f, load)
		if err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return exitConfig
		}
		if !report(stdout, file, suite.Run(match), match != nil, verbose) {
			failed = true
		}
	}
	if failed {
		fmt.Fprintln(stdout, "FAIL")
		return 1
	}
	return 0
}

// testFiles returns the rule test files beside the configuration file
// cfgFile (pipeline.toml when empty), or why there are none.
func testFiles(cfgFile string) ([]string, error) {
	at := cfgFile
	if at == "" {
		at = "pipeline.toml"
	}
	if _, err := os.Stat(at); cfgFile != "" && err != nil {
		// The test files are looked for beside it: say what is wrong.
		return nil, fmt.Errorf("-c %s: %w", cfgFile, err)
	}
	var files []string
	for _, p := range rulestest.Patterns(at) {
		m, _ := filepath.Glob(p) // the patterns are well-formed
		files = append(files, m...)
	}
	slices.Sort(files)
	files = slices.Compact(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("no test files: give FILES, or write %s", strings.Join(rulestest.Patterns(at), " or "))
	}
	return files, nil
}

// report prints the results of one test file as go test does (each case
// with verbose, the failures' diffs, a summary line) and says whether every
// case passed; filtered says that -run chose the cases.
func report(w io.Writer, file string, results []rulestest.Result, filtered, verbose bool) bool {
	nfail := 0
	for _, r := range results {
		if verbose {
			fmt.Fprintf(w, "=== RUN   %s\n", r.Name)
		}
		if r.Passed() {
			if verbose {
				fmt.Fprintf(w, "--- PASS: %s\n", r.Name)
			}
			continue
		}
		nfail++
		fmt.Fprintf(w, "--- FAIL: %s\n", r.Name)
		for _, d := range r.Diffs {
			fmt.Fprintf(w, "    %s\n", strings.ReplaceAll(d, "\n", "\n    "))
		}
	}
	summary := fmt.Sprintf("%d cases", len(results))
	if len(results) == 1 {
		summary = "1 case"
	}
	if filtered && len(results) == 0 {
		summary += " (none matches -run)"
	}
	if nfail > 0 {
		fmt.Fprintf(w, "FAIL\t%s\t%s, %d failed\n", file, summary, nfail)
		return false
	}
	fmt.Fprintf(w, "ok  \t%s\t%s\n", file, summary)
	return true
}
