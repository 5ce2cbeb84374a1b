package sasl

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// serverNonceLen is how many random bytes the server adds to the client's
// nonce: more than RFC 5802's implied minimum and Kafka's 130 bits.
const serverNonceLen = 24

// Scram is one SCRAM exchange on the server side: two Steps. It is used by
// one connection at a time and is not safe for concurrent use.
//
// An unknown user does not fail the first step. The exchange goes on with
// a fake credential (a salt stable per user name, Kafka's default
// iterations, random keys) and fails at the proof with the same
// ErrAuthFailed a wrong password gets. Kafka instead fails the first step;
// doing so would tell anyone which user names exist.
type Scram struct {
	mech    string
	newHash func() hash.Hash
	lookup  func(user string) (Credential, bool)
	state   scramState

	// serverNonce is drawn by NewScram; an internal test replaces it to
	// replay RFC 7677's exchange.
	serverNonce string

	// Set by the first step, used by the second.
	gs2Header       string
	clientFirstBare string
	serverFirst     string
	nonce           string // client nonce then server nonce
	user            string
	cred            Credential
	known           bool // false: cred is the fake of an unknown user

	authenticated string // the user, once the proof verified
}

type scramState uint8

const (
	awaitFirst scramState = iota
	awaitFinal
	over // succeeded or failed: no more steps
)

// NewScram begins an exchange for mech; lookup finds a user's credential
// for that mechanism (false: no such user). lookup is called once, with the
// unescaped user name, during the first Step.
func NewScram(mech string, lookup func(user string) (Credential, bool)) (*Scram, error) {
	newHash, err := scramHash(mech)
	if err != nil {
		return nil, err
	}
	if lookup == nil {
		return nil, errors.New("sasl: nil credential lookup")
	}
	nonce := make([]byte, serverNonceLen)
	rand.Read(nonce) // never fails (crypto/rand since Go 1.24)
	return &Scram{
		mech:        mech,
		newHash:     newHash,
		lookup:      lookup,
		serverNonce: base64.RawStdEncoding.EncodeToString(nonce),
	}, nil
}

// Step takes the client's next message and returns the server's reply.
// The first call takes client-first and returns server-first (done false);
// the second takes client-final and, when the proof verifies, returns
// server-final "v=..." with done true. Any error means authentication
// failed: the caller answers SASL_AUTHENTICATION_FAILED and the exchange is
// over, as it is after done: further calls return ErrExchangeOver.
func (s *Scram) Step(msg []byte) (reply []byte, done bool, err error) {
	state := s.state
	if state == over {
		return nil, false, ErrExchangeOver
	}
	s.state = over // until this step succeeds: any error ends the exchange
	if len(msg) > MaxMessage {
		return nil, false, fmt.Errorf("%w: message of %d bytes exceeds %d", ErrMalformed, len(msg), MaxMessage)
	}
	if state == awaitFirst {
		reply, err := s.first(string(msg))
		if err != nil {
			return nil, false, err
		}
		s.state = awaitFinal
		return reply, false, nil
	}
	reply, err = s.final(string(msg))
	s.cred = Credential{} // the keys are not needed any more, whatever happened
	if err != nil {
		return nil, false, err
	}
	return reply, true, nil
}

// User is the authenticated user name (unescaped) once Step returned done;
// "" before.
func (s *Scram) User() string { return s.authenticated }

// first handles client-first and builds server-first.
func (s *Scram) first(msg string) ([]byte, error) {
	cf, err := parseClientFirst(msg)
	if err != nil {
		return nil, err
	}
	cred, known := s.lookup(cf.user)
	if known {
		if err := cred.validate(s.newHash); err != nil {
			return nil, fmt.Errorf("sasl: stored %s credential of user %q: %w", s.mech, cf.user, err)
		}
	} else {
		cred = fakeCredential(s.mech, cf.user, s.newHash)
	}
	s.gs2Header, s.clientFirstBare, s.user = cf.gs2Header, cf.bare, cf.user
	s.cred, s.known = cred, known
	s.nonce = cf.nonce + s.serverNonce
	s.serverFirst = "r=" + s.nonce +
		",s=" + base64.StdEncoding.EncodeToString(cred.Salt) +
		",i=" + strconv.Itoa(cred.Iterations)
	return []byte(s.serverFirst), nil
}

// final handles client-final: it checks the message is this exchange's,
// then the proof, and builds server-final.
func (s *Scram) final(msg string) ([]byte, error) {
	withoutProof, proof, err := s.parseClientFinal(msg)
	if err != nil {
		return nil, err
	}
	authMessage := []byte(s.clientFirstBare + "," + s.serverFirst + "," + withoutProof)
	clientKey := mac(s.newHash, s.cred.StoredKey, authMessage) // ClientSignature
	subtle.XORBytes(clientKey, clientKey, proof)               // ClientKey = ClientSignature XOR ClientProof
	h := s.newHash()
	h.Write(clientKey)
	if !hmac.Equal(h.Sum(nil), s.cred.StoredKey) || !s.known {
		return nil, ErrAuthFailed
	}
	s.authenticated = s.user
	signature := mac(s.newHash, s.cred.ServerKey, authMessage)
	return []byte("v=" + base64.StdEncoding.EncodeToString(signature)), nil
}

// fakeKey keys the fake salts of unknown users: random per process, so the
// salts cannot be predicted, and stable within it, so that asking twice for
// an unknown user shows the same salt as asking twice for a known one.
var fakeKey = sync.OnceValue(func() []byte {
	key := make([]byte, 32)
	rand.Read(key)
	return key
})

// fakeCredential stands in for an unknown user's credential. Its keys are
// random, so no proof matches it (and final checks known besides).
func fakeCredential(mech, user string, newHash func() hash.Hash) Credential {
	salt := mac(sha256.New, fakeKey(), []byte(mech+"\x00"+user))[:saltLen]
	size := newHash().Size()
	keys := make([]byte, 2*size)
	rand.Read(keys)
	return Credential{
		Salt:       salt,
		Iterations: MinIterations,
		StoredKey:  keys[:size],
		ServerKey:  keys[size:],
	}
}

// clientFirst is a parsed client-first message.
type clientFirst struct {
	gs2Header string // as sent, with its trailing ","
	bare      string // client-first-message-bare, part of AuthMessage
	user      string // unescaped
	nonce     string
}

// parseClientFirst parses and checks client-first: the gs2 header, then
// "n=user,r=nonce" and Kafka's extensions.
func parseClientFirst(msg string) (clientFirst, error) {
	header, authzid, bare, err := parseGS2Header(msg)
	if err != nil {
		return clientFirst{}, err
	}
	attrs := strings.Split(bare, ",")
	if strings.HasPrefix(attrs[0], "m=") {
		return clientFirst{}, fmt.Errorf("%w: mandatory extension (m=)", ErrUnsupported)
	}
	if len(attrs) < 2 {
		return clientFirst{}, fmt.Errorf("%w: client-first has no nonce", ErrMalformed)
	}
	name, ok := strings.CutPrefix(attrs[0], "n=")
	if !ok {
		return clientFirst{}, fmt.Errorf("%w: client-first does not start with n=", ErrMalformed)
	}
	user, err := unescapeSASLName(name)
	if err != nil {
		return clientFirst{}, fmt.Errorf("user name: %w", err)
	}
	nonce, ok := strings.CutPrefix(attrs[1], "r=")
	if !ok || !validNonce(nonce) {
		return clientFirst{}, fmt.Errorf("%w: client-first nonce missing or not printable", ErrMalformed)
	}
	if err := checkFirstExtensions(attrs[2:]); err != nil {
		return clientFirst{}, err
	}
	if authzid != "" && authzid != user {
		return clientFirst{}, ErrAuthzid
	}
	return clientFirst{gs2Header: header, bare: bare, user: user, nonce: nonce}, nil
}

// parseGS2Header splits the gs2 header ("n,," "y,," or with "a=authzid"
// between the commas) off msg, returning it as sent, the unescaped authzid
// ("" if none) and the rest, client-first-bare. "y" (the client could bind
// a channel but thinks we cannot) is accepted: no -PLUS mechanism is
// offered, so there is no downgrade to detect.
func parseGS2Header(msg string) (header, authzid, bare string, err error) {
	flag, rest, ok := strings.Cut(msg, ",")
	if !ok {
		return "", "", "", fmt.Errorf("%w: no gs2 header", ErrMalformed)
	}
	switch {
	case flag == "n" || flag == "y":
	case strings.HasPrefix(flag, "p="):
		return "", "", "", fmt.Errorf("%w: channel binding", ErrUnsupported)
	default:
		return "", "", "", fmt.Errorf("%w: gs2 header flag is not n, y or p=", ErrMalformed)
	}
	az, bare, ok := strings.Cut(rest, ",")
	if !ok {
		return "", "", "", fmt.Errorf("%w: gs2 header not terminated", ErrMalformed)
	}
	if az != "" {
		name, ok := strings.CutPrefix(az, "a=")
		if !ok {
			return "", "", "", fmt.Errorf("%w: gs2 header authzid does not start with a=", ErrMalformed)
		}
		if authzid, err = unescapeSASLName(name); err != nil {
			return "", "", "", fmt.Errorf("authzid: %w", err)
		}
	}
	return msg[:len(msg)-len(bare)], authzid, bare, nil
}

// checkFirstExtensions checks client-first's extensions. As in Kafka, the
// only one known is "tokenauth", which asks to authenticate a delegation
// token when true (Java's Boolean.parseBoolean, so any case); tokens are
// not served. Others are refused rather than ignored, as Kafka does.
func checkFirstExtensions(attrs []string) error {
	seen := false
	for _, attr := range attrs {
		name, value, err := parseExtension(attr)
		if err != nil {
			return err
		}
		if name != "tokenauth" {
			return fmt.Errorf("%w: extension %s", ErrUnsupported, name)
		}
		if seen {
			return fmt.Errorf("%w: tokenauth extension repeated", ErrMalformed)
		}
		seen = true
		if strings.EqualFold(value, "true") {
			return fmt.Errorf("%w: delegation token authentication", ErrUnsupported)
		}
	}
	return nil
}

// parseClientFinal checks client-final "c=..,r=..[,ext=..],p=.." against
// this exchange and returns it without the proof (part of AuthMessage) and
// the decoded proof, which is the hash's size.
func (s *Scram) parseClientFinal(msg string) (withoutProof string, proof []byte, err error) {
	i := strings.LastIndex(msg, ",p=")
	if i < 0 {
		return "", nil, fmt.Errorf("%w: client-final has no proof", ErrMalformed)
	}
	withoutProof = msg[:i]
	proof, err = decodeBase64(msg[i+len(",p="):])
	if err != nil || len(proof) != s.newHash().Size() {
		return "", nil, fmt.Errorf("%w: client-final proof is not base64 of the hash's size", ErrMalformed)
	}
	attrs := strings.Split(withoutProof, ",")
	if len(attrs) < 2 {
		return "", nil, fmt.Errorf("%w: client-final has no nonce", ErrMalformed)
	}
	binding, ok := strings.CutPrefix(attrs[0], "c=")
	if !ok {
		return "", nil, fmt.Errorf("%w: client-final does not start with c=", ErrMalformed)
	}
	if header, err := decodeBase64(binding); err != nil || string(header) != s.gs2Header {
		return "", nil, fmt.Errorf("%w: client-final channel binding is not the gs2 header sent", ErrMalformed)
	}
	// librdkafka before 2.6.1 (confluentinc/librdkafka#4895) sends its
	// own nonce twice: its nonce, then the combined one. Kafka 3.8.1 to
	// 3.9 took that, and the clients that do it (Debian's kcat among
	// them) are everywhere: taken here too. The nonce is in the message
	// the proof signs either way.
	clientTwice := strings.TrimSuffix(s.nonce, s.serverNonce) + s.nonce
	if nonce, ok := strings.CutPrefix(attrs[1], "r="); !ok || nonce != s.nonce && nonce != clientTwice {
		return "", nil, fmt.Errorf("%w: client-final nonce is not this exchange's", ErrMalformed)
	}
	for _, attr := range attrs[2:] {
		name, _, err := parseExtension(attr)
		if err != nil {
			return "", nil, err
		}
		if len(name) == 1 && strings.Contains("acceimnprsv", name) {
			return "", nil, fmt.Errorf("%w: client-final repeats attribute %s", ErrMalformed, name)
		}
	}
	return withoutProof, proof, nil
}

// parseExtension splits an extension "name=value": name ASCII letters,
// value non-empty ASCII other than NUL and "," (Kafka's grammar).
func parseExtension(attr string) (name, value string, err error) {
	name, value, ok := strings.Cut(attr, "=")
	if !ok || name == "" || value == "" {
		return "", "", fmt.Errorf("%w: extension is not name=value", ErrMalformed)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i] | 0x20; c < 'a' || c > 'z' {
			return "", "", fmt.Errorf("%w: extension name is not letters", ErrMalformed)
		}
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; c == 0 || c > 0x7f {
			return "", "", fmt.Errorf("%w: extension value is not ASCII", ErrMalformed)
		}
	}
	return name, value, nil
}

// unescapeSASLName decodes a saslname: UTF-8 without NUL (or ",", which
// cannot reach here), with "=2C" for "," and "=3D" for "="; any other "="
// is an error. The escapes are upper case only, as in Kafka.
func unescapeSASLName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty name", ErrMalformed)
	}
	if !utf8.ValidString(name) {
		return "", fmt.Errorf("%w: name is not UTF-8", ErrMalformed)
	}
	var b strings.Builder
	b.Grow(len(name))
	for i := 0; i < len(name); i++ {
		switch c := name[i]; c {
		case 0:
			return "", fmt.Errorf("%w: name contains NUL", ErrMalformed)
		case '=':
			switch esc := name[i+1:]; {
			case strings.HasPrefix(esc, "2C"):
				b.WriteByte(',')
			case strings.HasPrefix(esc, "3D"):
				b.WriteByte('=')
			default:
				return "", fmt.Errorf("%w: name has = not followed by 2C or 3D", ErrMalformed)
			}
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// validNonce reports whether nonce is non-empty printable ASCII without ",".
func validNonce(nonce string) bool {
	if nonce == "" {
		return false
	}
	for i := 0; i < len(nonce); i++ {
		if c := nonce[i]; c < 0x21 || c > 0x7e || c == ',' {
			return false
		}
	}
	return true
}

// decodeBase64 decodes padded standard base64 strictly. encoding/base64
// skips "\r" and "\n" even in strict mode; they are refused here so that a
// value has one spelling.
func decodeBase64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("sasl: line break in base64")
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}
