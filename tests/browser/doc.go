// Package browser tests the admin listener's web UI (pipeline/inspector)
// in a real browser: headless Chromium from Debian's chromium package,
// driven by chromedp, against a real daemon with real sink plugins built by
// tests/harness. Without chromium on PATH the tests skip with a message;
// CI installs it (.ci/run). `make ui-screenshots` runs them with
// -ui.screenshots=docs/ui to refresh the screenshots of every page.
package browser
