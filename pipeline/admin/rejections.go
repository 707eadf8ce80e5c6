package admin

import (
	"net/http"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// Rejection is a rejected request as GET /v1/rejections shows it.
type Rejection struct {
	ID         string            `json:"id"`
	Source     string            `json:"source"`
	ReceivedAt time.Time         `json:"received_at"`
	Status     int               `json:"status"`
	Reason     string            `json:"reason"`
	Violations []string          `json:"violations,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
	// Body is the start of the body as text (at most 8 KiB); Truncated
	// says it was cut, BodySize is its full length (-1: unknown).
	Body       string `json:"body"`
	Truncated  bool   `json:"truncated,omitempty"`
	BodySize   int64  `json:"body_size"`
	RemoteAddr string `json:"remote_addr,omitempty"`
}

// RejectionList is the answer of GET /v1/rejections.
type RejectionList struct {
	Rejections []Rejection `json:"rejections"`
	Next       string      `json:"next,omitempty"`
}

// rejections serves GET /v1/rejections?source=&since=&after=&limit= (and
// GET /v1/events?rejected=true): the rejected requests that sources with
// keep_rejected keep, by source and then time.
func (s *server) rejections(w http.ResponseWriter, r *http.Request) {
	if !s.haveLog(w) {
		return
	}
	rl, ok := s.o.Log.(pipeline.RejectionLog)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this event log does not keep rejected requests")
		return
	}
	q := r.URL.Query()
	f := pipeline.RejectionFilter{Source: q.Get("source"), After: q.Get("after")}
	var err error
	if f.Since, err = ParseTime(q.Get("since"), time.Now()); err != nil {
		writeError(w, http.StatusBadRequest, "since: "+err.Error())
		return
	}
	if f.Limit, err = parseLimit(q.Get("limit")); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	rs, next, err := rl.Rejections(r.Context(), f)
	if err != nil {
		writeLogError(w, err)
		return
	}
	out := RejectionList{Rejections: make([]Rejection, 0, len(rs)), Next: next}
	for _, rj := range rs {
		out.Rejections = append(out.Rejections, Rejection{
			ID: rj.ID, Source: rj.Source, ReceivedAt: rj.ReceivedAt, Status: rj.Status, Reason: rj.Reason,
			Violations: rj.Violations, Headers: rj.Headers, Body: string(rj.Body), Truncated: rj.Truncated,
			BodySize: rj.BodySize, RemoteAddr: rj.RemoteAddr,
		})
	}
	writeJSON(w, http.StatusOK, out)
}
