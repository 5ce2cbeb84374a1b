// Package sasl is the server side of the SASL mechanisms Shale offers Kafka
// clients: PLAIN (RFC 4616) and SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802 and
// RFC 7677, as Kafka implements them, KIP-84). It knows nothing of the Kafka
// wire protocol: the broker hands it the SaslAuthenticate request's auth
// bytes and sends back what it returns. It also derives and checks the
// stored SCRAM credentials, which never contain the password.
//
// This comment specifies what the package accepts; the grammar is RFC 5802's
// narrowed to what Kafka's ScramSaslServer accepts.
//
// # PLAIN
//
// One message, "authzid NUL authcid NUL passwd" in UTF-8 (RFC 4616). The
// user (authcid) and password must be non-empty. As in Kafka, the authzid
// must be empty or equal to the user: a client cannot ask to act as
// someone else. PLAIN has no credential of its own here; a broker checks
// the password against the user's SCRAM credential (Credential.CheckPassword).
//
// # SCRAM
//
// Two round trips, each one Scram.Step:
//
//	client-first   gs2-header client-first-bare
//	gs2-header     ("n" | "y") "," ["a=" saslname] ","
//	client-first-bare
//	               "n=" saslname ",r=" client-nonce *("," ext "=" value)
//	server-first   "r=" client-nonce server-nonce ",s=" base64(salt) ",i=" iterations
//	client-final   "c=" base64(gs2-header) ",r=" client-nonce server-nonce
//	               *("," ext "=" value) ",p=" base64(ClientProof)
//	server-final   "v=" base64(ServerSignature)
//
// A saslname is UTF-8 with "," written "=2C" and "=" written "=3D"; any
// other "=" is an error. A nonce is printable ASCII other than ",". An ext
// name is ASCII letters (Kafka's extensions are words, not RFC 5802's single
// letters) and its value ASCII other than NUL and ",". The only extension
// the first message may carry is Kafka's "tokenauth", and only as false:
// delegation tokens are not served. Channel binding ("p=" in the gs2
// header) and the mandatory-extension attribute ("m=") are refused.
//
// With H and HMAC of the mechanism's hash (SHA-256 or SHA-512):
//
//	SaltedPassword  = Hi(password, salt, iterations)  (PBKDF2 with HMAC)
//	ClientKey       = HMAC(SaltedPassword, "Client Key")
//	StoredKey       = H(ClientKey)
//	ServerKey       = HMAC(SaltedPassword, "Server Key")
//	AuthMessage     = client-first-bare "," server-first "," client-final-without-proof
//	ClientSignature = HMAC(StoredKey, AuthMessage)
//	ClientProof     = ClientKey XOR ClientSignature
//	ServerSignature = HMAC(ServerKey, AuthMessage)
//
// The server keeps only salt, iterations, StoredKey and ServerKey (a
// Credential). It recovers ClientKey from the proof and accepts when its
// hash is StoredKey. Passwords are not SASLprep-normalized: neither Kafka
// nor its clients do, so a password is its UTF-8 bytes.
//
// Every message is bounded (MaxMessage) and every field checked before
// use: these bytes come from unauthenticated peers.
package sasl

import "errors"

// Mechanism names as Kafka spells them (SaslHandshake).
const (
	Plain       = "PLAIN"
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
)

// MaxMessage bounds one client message (a PLAIN token or a SCRAM message).
// A real one is well under 1 KiB; the broker bounds frames too, but this
// package does not rely on it.
const MaxMessage = 4096

// Errors, to test with errors.Is. Except for ErrInvalidCredential (a
// stored credential unfit for its mechanism: the broker should log it and
// answer as for any failure), their texts never depend on whether a user
// exists, so a broker may show them to the client.
var (
	// ErrUnknownMechanism is a mechanism name this package does not serve.
	ErrUnknownMechanism = errors.New("sasl: unknown mechanism")
	// ErrMalformed is a client message that does not parse.
	ErrMalformed = errors.New("sasl: malformed message")
	// ErrUnsupported is a well-formed request for something not offered:
	// channel binding, delegation tokens, a mandatory or unknown extension.
	ErrUnsupported = errors.New("sasl: unsupported")
	// ErrAuthFailed is a wrong password or proof, or an unknown user: the
	// two are deliberately indistinguishable.
	ErrAuthFailed = errors.New("sasl: authentication failed")
	// ErrAuthzid is an authorization id other than the user's.
	ErrAuthzid = errors.New("sasl: authorization id differs from user")
	// ErrInvalidCredential is a credential outside the bounds this package
	// accepts (iterations, salt, key lengths): a stored one that is wrong
	// for its mechanism, or one being created.
	ErrInvalidCredential = errors.New("sasl: invalid credential")
	// ErrExchangeOver is a Step after the exchange succeeded or failed.
	ErrExchangeOver = errors.New("sasl: exchange is over")
)
