package inspector

import (
	"fmt"
	"html/template"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// pageNames are the templates under templates/, each drawn inside
// layout.html.
var pageNames = []string{"login", "error", "overview", "events", "event", "dlqindex", "dlq", "confirm", "refused", "replay", "replayjob", "tail"}

var funcs = template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05.000Z")
	},
	"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
	"sub": func(a, b int) int { return a - b },
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return human(time.Since(t)) + " ago"
	},
	"secs": func(s float64) string {
		if s <= 0 {
			return "—"
		}
		return human(time.Duration(s * float64(time.Second)))
	},
	"rate": func(f float64) string {
		switch {
		case f == 0:
			return "0"
		case f < 10:
			return fmt.Sprintf("%.1f", f)
		}
		return fmt.Sprintf("%.0f", math.Round(f))
	},
	"join":  strings.Join,
	"clip":  clip,
	"count": func(f float64) string { return fmt.Sprintf("%.0f", f) },
	"outcomeClass": func(o string) string {
		switch o {
		case "accepted":
			return "ok"
		case "duplicate":
			return "info"
		}
		return "bad" // a refusal, by its class
	},
	"stateClass": func(s string) string {
		switch s {
		case "delivered", "running", "accepted", "closed", "done":
			return "ok"
		case "dead", "dropped", "failed", "breaker open", "removed", "error":
			return "bad"
		case "retrying", "backoff", "paused", "starting", "duplicate":
			return "warn"
		}
		return "info"
	},
}

// clip cuts s to at most n bytes (on a rune boundary) and says how long it
// was: a sender controls a dedup key, up to the source's max_body.
func clip(n int, s string) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", s[:cut], len(s))
}

// human writes d the way a person reads an age: 3s, 4m10s, 2h5m, 3d4h.
func human(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

func parsePages() map[string]*template.Template {
	out := map[string]*template.Template{}
	for _, n := range pageNames {
		out[n] = template.Must(template.New(n).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+n+".html"))
	}
	return out
}
