// Package auth verifies that a webhook request comes from its sender.
//
// A source's authentication is described by a [Spec] (its secrets already
// read by the caller); [New] validates the Spec once, at load, and returns a
// [Verifier] that checks each request's headers and raw body. A failed check
// is an [*Error] whose Reason is one short line meant for the sender: it
// never contains a secret, a computed MAC or the signature that was received.
//
// # Schemes
//
//   - "none": every request is accepted.
//   - "standard-webhooks": the Standard Webhooks specification (headers
//     webhook-id, webhook-timestamp and webhook-signature; HMAC-SHA256 over
//     "id.timestamp.body" with the base64 key after "whsec_"). The MAC is
//     computed by the reference library; the headers and the timestamp
//     tolerance are checked here, because the library fixes the tolerance at
//     five minutes and reads the clock itself.
//   - "hmac": an HMAC of the body in one header; generic (header, algorithm,
//     encoding, prefix) or a preset: "github" (X-Hub-Signature-256) or
//     "stripe" (Stripe-Signature, a signed timestamp).
//   - "bearer": Authorization: Bearer <token>.
//   - "basic": Authorization: Basic base64(user:password).
//   - "url-token": a secret token in one query parameter of the URL
//     (https://host/hooks/x?token=<secret>), for senders that can only be
//     given a URL. Its [Verifier] is a [URLVerifier]: the caller passes the
//     raw query string. The token shows wherever the URL does, so callers
//     pass whatever they log or keep of a URL or of a header that may hold
//     one through the source's [Redactor] ([NewRedactor]), which redacts
//     the parameter and every configured token, however it is encoded.
//
// # Rotation
//
// Every scheme with secrets accepts several at once: a request that matches
// any of them is accepted. To rotate, add the new secret, move the senders
// to it, then remove the old one.
//
// # Timing
//
// Every comparison of a MAC, token or password runs in constant time.
// Bearer tokens, URL tokens and Basic credentials are hashed with SHA-256 before the
// comparison and compared against every configured secret, so neither the
// length of a secret nor which one matched shows in the timing.
package auth
