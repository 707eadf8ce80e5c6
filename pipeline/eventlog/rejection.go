package eventlog

import (
	"encoding/binary"
	"encoding/hex"
	"strings"
	"time"
)

// RejectionID is the id of a kept rejection, also its cursor in
// [pipeline.RejectionLog.Rejections]: the source, a slash, then 32 hex
// digits, 16 of the time it was received (unix nanoseconds) and 16 of n,
// which tells apart rejections of one source in one nanosecond. Ids sort
// by source, then time. Every backend uses this form.
func RejectionID(source string, at time.Time, n uint64) string {
	return source + "/" + hex.EncodeToString(RejectionSuffix(at, n))
}

// RejectionSuffix is the part of [RejectionID] after the slash as the 16
// bytes it encodes: the time, then n, each big-endian, so that byte order
// is time order. badgerlog keys rejections by it.
func RejectionSuffix(at time.Time, n uint64) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(at.UnixNano()))
	return binary.BigEndian.AppendUint64(b, n)
}

// ParseRejectionID splits an id of the form of [RejectionID] into its
// source and suffix (see [RejectionSuffix]); ok is false for any other
// string, which the backends refuse as a cursor with [pipeline.ErrBadCursor].
func ParseRejectionID(id string) (source string, suffix []byte, ok bool) {
	i := strings.LastIndexByte(id, '/')
	if i < 0 || len(id)-i-1 != 32 {
		return "", nil, false
	}
	for _, c := range id[i+1:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", nil, false // lower-case only, so that ids sort as their times do
		}
	}
	suffix, err := hex.DecodeString(id[i+1:])
	if err != nil {
		return "", nil, false
	}
	return id[:i], suffix, true
}
