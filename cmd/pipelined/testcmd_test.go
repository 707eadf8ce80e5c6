package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runTest runs `pipelined test args...` in-process.
func runTest(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(append([]string{"test"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestTestCommandExamplesPass(t *testing.T) {
	for _, args := range [][]string{
		{"-c", "../../examples/callkaro/pipeline.toml"},
		{"-c", "../../pipeline.toml"},
		{"-c", "testdata/rulestest-hmac.toml", "-v"},
		{"-c", "testdata/urltoken/pipeline.toml", "-v"},
	} {
		code, out, errOut := runTest(t, args...)
		if code != 0 {
			t.Errorf("pipelined test %s = exit %d, want 0\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
		}
		if !strings.Contains(out, "ok  \t") {
			t.Errorf("pipelined test %s printed no ok line:\n%s", strings.Join(args, " "), out)
		}
	}
}

func TestTestCommandVerboseAndRun(t *testing.T) {
	code, out, _ := runTest(t, "-c", "../../examples/callkaro/pipeline.toml", "-v", "-run", "^interested lead$")
	if code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, out)
	}
	want := "=== RUN   interested lead\n--- PASS: interested lead\nok  \t../../examples/callkaro/pipeline_test.toml\t1 case\n"
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
}

func TestTestCommandReportsFailures(t *testing.T) {
	code, out, errOut := runTest(t, "-c", "../../examples/callkaro/pipeline.toml", "testdata/rulestest-failing.toml")
	if code != 1 {
		t.Errorf("exit %d, want 1\nstderr:\n%s", code, errOut)
	}
	for _, want := range []string{
		"--- FAIL: wrong routes\n    routes: want [all-calls long-calls], got [all-calls interested-leads]; missing long-calls; unexpected interested-leads\n",
		"--- FAIL: wrong transform\n    transform for sink leads (route interested-leads) (-want +got):\n",
		"    -   \"seconds\": 60,\n    +   \"seconds\": 120,\n",
		"--- FAIL: not a duplicate\n    duplicate_of: want \"passes\", got not a duplicate: dedup key \"other\", that case's is \"2303fa770b666a64ab1694c1e\"\n",
		"--- FAIL: accepted, not refused\n    status: want 400, got 200\n",
		"FAIL\ttestdata/rulestest-failing.toml\t5 cases, 4 failed\nFAIL\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "--- FAIL: passes") || strings.Contains(out, "--- PASS") {
		t.Errorf("without -v, only failing cases are printed:\n%s", out)
	}
}

func TestTestCommandUnknownKey(t *testing.T) {
	code, out, _ := runTest(t, "-c", "../../examples/callkaro/pipeline.toml", "testdata/rulestest-unknown-key.toml")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if want := "testdata/rulestest-unknown-key.toml:4: unknown key test.expect_sink"; !strings.Contains(out, want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
}

// TestTestCommandMissingConfig: a -c that names no file says so, rather
// than that no test file lies beside it.
func TestTestCommandMissingConfig(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "pipeline.toml")
	code, _, out := runTest(t, "-c", missing)
	if want := "pipelined test: -c " + missing + ": stat " + missing + ": no such file or directory"; code != 1 || !strings.Contains(out, want) {
		t.Errorf("exit %d, output %q; want 1 and %q", code, out, want)
	}
}

func TestTestCommandAuth(t *testing.T) {
	// The signed case passes only with the file's secret, the others
	// expect 401; then the same file with a wrong expectation fails.
	dir := t.TempDir()
	data, err := os.ReadFile("testdata/rulestest-hmac_test.toml")
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(data), "expect_status = 401", "expect_status = 200", 1)
	f := dir + "/bad.toml"
	if err := os.WriteFile(f, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runTest(t, "-c", "testdata/rulestest-hmac.toml", f)
	if code != 1 || !strings.Contains(out, "--- FAIL: unsigned order\n    status: want 200, got 401 (missing X-Signature header)\n") {
		t.Errorf("exit %d, output:\n%s\nwant exit 1 and the unsigned order failing with 401", code, out)
	}
	if _, ok := os.LookupEnv("PIPELINED_TEST_SHOP_SECRET"); ok {
		t.Errorf("PIPELINED_TEST_SHOP_SECRET is still set after the run: a test file's env must be restored")
	}
}

func TestTestCommandExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"config error", []string{"-c", "testdata/rulestest-broken.toml", "../../examples/callkaro/pipeline_test.toml"}, exitConfig},
		// A missing secret is not a configuration error for rule tests:
		// the cases of the source that lacks it are refused 401 and fail.
		{"secret missing", []string{"-c", "testdata/rulestest-hmac.toml", "../../examples/callkaro/pipeline_test.toml"}, 1},
		{"bad flag", []string{"-nope"}, 2},
		{"bad regexp", []string{"-c", "../../examples/callkaro/pipeline.toml", "-run", "("}, 2},
		{"no test files", []string{"-c", "testdata/nowhere/pipeline.toml"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, out, errOut := runTest(t, tc.args...); code != tc.want {
				t.Errorf("pipelined test %s = exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(tc.args, " "), code, tc.want, out, errOut)
			}
		})
	}
}

// TestTestCommandWithoutSecrets: `pipelined test` runs in a CI that has
// neither the admin token nor the token of a source no case signs for;
// `pipelined check` on the same file still wants them.
func TestTestCommandWithoutSecrets(t *testing.T) {
	for _, v := range []string{"PIPELINED_TEST_ADMIN_TOKEN_NOT_IN_CI", "PIPELINED_TEST_CRM_TOKEN_NOT_IN_CI", "PIPELINED_TEST_SHOP_SECRET_CI"} {
		if _, ok := os.LookupEnv(v); ok {
			t.Fatalf("%s is set in the test's environment: the premise (a CI without secrets) does not hold", v)
		}
	}
	code, out, errOut := runTest(t, "-c", "testdata/nosecrets/pipeline.toml", "-v")
	if code != 0 {
		t.Errorf("pipelined test = exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "ok  \ttestdata/nosecrets/pipeline_test.toml\t3 cases") {
		t.Errorf("pipelined test printed no ok line for 3 cases:\n%s", out)
	}
	var checkOut, checkErr bytes.Buffer
	if code := run([]string{"check", "--no-plugins", "-c", "testdata/nosecrets/pipeline.toml"}, &checkOut, &checkErr); code == 0 {
		t.Errorf("pipelined check without the secrets = exit 0, want an error: serve needs them\n%s%s", checkOut.String(), checkErr.String())
	} else {
		for _, want := range []string{"PIPELINED_TEST_ADMIN_TOKEN_NOT_IN_CI", "PIPELINED_TEST_CRM_TOKEN_NOT_IN_CI"} {
			if !strings.Contains(checkOut.String()+checkErr.String(), want) {
				t.Errorf("pipelined check does not name %s:\n%s%s", want, checkOut.String(), checkErr.String())
			}
		}
	}
}
