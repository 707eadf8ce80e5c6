package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"testing"
)

var sha256Hash = sha256.New

// benchVerify measures one accepted request on the CallKaro call_ended body.
func benchVerify(b *testing.B, s Spec, h func(body []byte) http.Header) {
	body := callKaro(b)
	v := mustNew(b, s)
	hd := h(body)
	if err := v.Verify(hd, body, now); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := v.Verify(hd, body, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStandardWebhooks(b *testing.B) {
	benchVerify(b, swSpec(swSecret1), func(body []byte) http.Header { return swHeader(swKey1, "msg_1", nowTS, body) })
}

// BenchmarkStandardWebhooksRotated is the worst case of a rotation: the
// request matches the second secret.
func BenchmarkStandardWebhooksRotated(b *testing.B) {
	benchVerify(b, swSpec(swSecret2, swSecret1), func(body []byte) http.Header { return swHeader(swKey1, "msg_1", nowTS, body) })
}

func BenchmarkHMAC(b *testing.B) {
	benchVerify(b, Spec{Type: TypeHMAC, Header: "X-Signature", Secrets: [][]byte{hmacKey1}}, func(body []byte) http.Header {
		return hdr("X-Signature", hex.EncodeToString(mac(sha256.New, hmacKey1, string(body))))
	})
}

func BenchmarkGitHub(b *testing.B) {
	benchVerify(b, Spec{Type: TypeHMAC, Preset: "github", Secrets: [][]byte{hmacKey1}}, func(body []byte) http.Header {
		return hdr("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac(sha256.New, hmacKey1, string(body))))
	})
}

func BenchmarkStripe(b *testing.B) {
	benchVerify(b, Spec{Type: TypeHMAC, Preset: "stripe", Secrets: [][]byte{hmacKey1}}, func(body []byte) http.Header {
		return hdr("Stripe-Signature", "t="+nowTS+",v1="+stripeSig(hmacKey1, nowTS, body))
	})
}

func BenchmarkBearer(b *testing.B) {
	benchVerify(b, Spec{Type: TypeBearer, Secrets: [][]byte{[]byte("tok-new"), []byte("tok-old")}}, func([]byte) http.Header {
		return hdr("Authorization", "Bearer tok-old")
	})
}

func BenchmarkBasic(b *testing.B) {
	benchVerify(b, Spec{Type: TypeBasic, Secrets: [][]byte{[]byte("u:new"), []byte("u:old")}}, func([]byte) http.Header {
		return hdr("Authorization", basicAuth("u:old"))
	})
}

func BenchmarkNone(b *testing.B) {
	benchVerify(b, Spec{Type: TypeNone}, func([]byte) http.Header { return http.Header{} })
}
