package sasl

import (
	"encoding/base64"
	"errors"
	"testing"
)

// RFC 7677 section 3: the SCRAM-SHA-256 example exchange.
const (
	rfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
	rfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	rfcServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	rfcClientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	rfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
)

// rfcCredential is user "user"'s credential in RFC 7677's example
// (password "pencil").
func rfcCredential(t testing.TB) Credential {
	t.Helper()
	salt, err := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	if err != nil {
		t.Fatal(err)
	}
	salted, err := SaltedPassword(ScramSHA256, "pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := CredentialFromSalted(ScramSHA256, salted, salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

// rfcScram is an exchange with RFC 7677's server nonce against a lookup
// that knows only RFC 7677's user.
func rfcScram(t testing.TB, cred Credential) *Scram {
	t.Helper()
	s, err := NewScram(ScramSHA256, func(user string) (Credential, bool) {
		return cred, user == "user"
	})
	if err != nil {
		t.Fatal(err)
	}
	s.serverNonce = rfcServerNonce
	return s
}

func TestScramRFC7677Vector(t *testing.T) {
	s := rfcScram(t, rfcCredential(t))
	reply, done, err := s.Step([]byte(rfcClientFirst))
	if err != nil || done || string(reply) != rfcServerFirst {
		t.Fatalf("first step = %q, %v, %v; want %q", reply, done, err, rfcServerFirst)
	}
	if s.User() != "" {
		t.Fatalf("User() = %q before done", s.User())
	}
	reply, done, err = s.Step([]byte(rfcClientFinal))
	if err != nil || !done || string(reply) != rfcServerFinal {
		t.Fatalf("final step = %q, %v, %v; want %q", reply, done, err, rfcServerFinal)
	}
	if s.User() != "user" {
		t.Fatalf("User() = %q, want user", s.User())
	}
}

func TestScramRFC7677VectorWrongPasswordFails(t *testing.T) {
	cred := rfcCredential(t)
	cred.StoredKey[0] ^= 1 // as if the password differed
	s := rfcScram(t, cred)
	if _, _, err := s.Step([]byte(rfcClientFirst)); err != nil {
		t.Fatal(err)
	}
	if _, done, err := s.Step([]byte(rfcClientFinal)); !errors.Is(err, ErrAuthFailed) || done {
		t.Fatalf("final step = %v, %v; want ErrAuthFailed", done, err)
	}
	if s.User() != "" {
		t.Fatalf("User() = %q after failure", s.User())
	}
}

// An unknown user gets a server-first shaped like a known user's, with the
// same salt each time, and fails only at the proof, like a wrong password.
func TestScramUnknownUserFailsAtProof(t *testing.T) {
	salts := make(map[string]bool)
	for range 2 {
		s, err := NewScram(ScramSHA256, func(string) (Credential, bool) { return Credential{}, false })
		if err != nil {
			t.Fatal(err)
		}
		s.serverNonce = rfcServerNonce
		if _, _, err := s.Step([]byte(rfcClientFirst)); err != nil {
			t.Fatalf("first step for an unknown user: %v", err)
		}
		if len(s.cred.Salt) != saltLen || s.cred.Iterations != MinIterations {
			t.Fatalf("fake credential has a %d-byte salt and %d iterations", len(s.cred.Salt), s.cred.Iterations)
		}
		salts[string(s.cred.Salt)] = true
		if _, done, err := s.Step([]byte(rfcClientFinal)); !errors.Is(err, ErrAuthFailed) || done {
			t.Fatalf("final step for an unknown user = %v, %v; want ErrAuthFailed", done, err)
		}
	}
	if len(salts) != 1 {
		t.Fatalf("an unknown user was shown %d different salts, want 1", len(salts))
	}
}

// TestScramTakesLibrdkafkasDoubledNonce: librdkafka before 2.6.1 sends
// its nonce before the combined one in its final message; the exchange
// verifies all the same, and any other prefix is refused.
func TestScramTakesLibrdkafkasDoubledNonce(t *testing.T) {
	const clientNonce = "rOprNGfwEbeRWgbNEkqO"
	final := func(nonce string) string {
		salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
		salted, err := SaltedPassword(ScramSHA256, "pencil", salt, 4096)
		if err != nil {
			t.Fatal(err)
		}
		newHash, _ := scramHash(ScramSHA256)
		withoutProof := "c=biws,r=" + nonce
		auth := "n=user,r=" + clientNonce + "," + rfcServerFirst + "," + withoutProof
		clientKey := mac(newHash, salted, []byte("Client Key"))
		sig := mac(newHash, storedKey(newHash, salted), []byte(auth))
		for i := range clientKey {
			clientKey[i] ^= sig[i]
		}
		return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(clientKey)
	}
	combined := clientNonce + rfcServerNonce
	for _, c := range []struct {
		nonce string
		ok    bool
	}{{combined, true}, {clientNonce + combined, true}, {"x" + combined, false}, {rfcServerNonce + combined, false}} {
		s := rfcScram(t, rfcCredential(t))
		if _, _, err := s.Step([]byte(rfcClientFirst)); err != nil {
			t.Fatal(err)
		}
		_, done, err := s.Step([]byte(final(c.nonce)))
		if done != c.ok || (err == nil) != c.ok {
			t.Fatalf("nonce %q: done %v, err %v; want ok %v", c.nonce, done, err, c.ok)
		}
	}
}
