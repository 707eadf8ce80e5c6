package jetstreamlog

import (
	"context"
	"errors"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// migrateDead moves the dead letters that an earlier build's Settle wrote
// on P.dlq.<sink>.<id> (they carry a Pl-Seq header) to P.dlq.<sink>.seq.<seq>,
// where a page of DeadLetters finds them in log order (see the comment at
// deadSubject); a page walking P.dlq.<sink>.<id> could miss them. Each is
// copied, then its old message deleted: after a crash in between both
// exist, and a page lists Settle's copy once (see DeadLetters). It reads
// every dead letter on P.dlq.<sink>.<id> once, Append's too, and reports
// how many it moved. Open runs it in the background.
func (l *Log) migrateDead(ctx context.Context) (int, error) {
	filter := l.subj("dlq", "*", "*")
	moved := 0
	for from := uint64(1); ; {
		rctx, cancel := l.reqCtx(ctx)
		m, err := l.stream.GetMsg(rctx, from, jetstream.WithGetMsgSubject(filter))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return moved, nil
		}
		if err != nil {
			return moved, l.wrapErr("move an earlier build's dead letter", err)
		}
		from = m.Sequence + 1
		seq := m.Header.Get(hdrSeq)
		if seq == "" {
			continue // Append's: stays, in log order after its event
		}
		parts := strings.Split(strings.TrimPrefix(m.Subject, l.prefix+"."), ".") // dlq, <sink>, <id>
		copied := nats.NewMsg(l.subj("dlq", parts[1], "seq", seq))
		for k, v := range m.Header {
			if !strings.HasPrefix(k, "Nats-") { // the server's own (a message id would be a duplicate)
				copied.Header[k] = v
			}
		}
		copied.Data = m.Data
		if err := l.publishBatch(ctx, []*nats.Msg{copied}); err != nil {
			return moved, err
		}
		rctx, cancel = l.reqCtx(ctx)
		err = l.stream.DeleteMsg(rctx, m.Sequence)
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return moved, l.wrapErr("move an earlier build's dead letter", err)
		}
		moved++
	}
}
