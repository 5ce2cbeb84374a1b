package sasl

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// fuzzLookup knows one user, RFC 7677's "user" with password "pencil",
// under both mechanisms.
func fuzzLookup(t testing.TB) map[string]func(string) (Credential, bool) {
	t.Helper()
	lookups := make(map[string]func(string) (Credential, bool))
	for _, mech := range []string{ScramSHA256, ScramSHA512} {
		cred := rfcCredential(t)
		if mech == ScramSHA512 {
			salted, err := SaltedPassword(mech, "pencil", cred.Salt, cred.Iterations)
			if err != nil {
				t.Fatal(err)
			}
			if cred, err = CredentialFromSalted(mech, salted, cred.Salt, cred.Iterations); err != nil {
				t.Fatal(err)
			}
		}
		lookups[mech] = func(user string) (Credential, bool) { return cred, user == "user" }
	}
	return lookups
}

// franzSeed records a successful exchange between franz-go's client (with
// a fixed nonce) and a server with RFC 7677's server nonce, so that the
// seed's final message verifies.
func franzSeed(t testing.TB, mech string, auth scram.Auth, lookup func(string) (Credential, bool)) (first, final []byte) {
	t.Helper()
	client := auth.AsSha256Mechanism()
	if mech == ScramSHA512 {
		client = auth.AsSha512Mechanism()
	}
	session, first, err := client.Authenticate(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	server, err := NewScram(mech, lookup)
	if err != nil {
		t.Fatal(err)
	}
	server.serverNonce = rfcServerNonce
	serverFirst, _, err := server.Step(first)
	if err != nil {
		t.Fatal(err)
	}
	_, final, err = session.Challenge(serverFirst)
	if err != nil {
		t.Fatal(err)
	}
	if _, done, err := server.Step(final); err != nil || !done {
		t.Fatalf("seed exchange = %v, %v", done, err)
	}
	return first, final
}

// FuzzScram runs arbitrary first and final messages through an exchange
// (sha512 picks the mechanism). Nothing may panic, every failure must end
// the exchange, and success must mean the one known user.
func FuzzScram(f *testing.F) {
	lookups := fuzzLookup(f)
	f.Add(false, []byte(rfcClientFirst), []byte(rfcClientFinal))
	for _, seed := range []struct {
		mech string
		auth scram.Auth
	}{
		{ScramSHA256, scram.Auth{User: "user", Pass: "pencil", Nonce: []byte("fuzz nonce")}},
		{ScramSHA512, scram.Auth{Zid: "user", User: "user", Pass: "pencil", Nonce: []byte("fuzz nonce")}},
		{ScramSHA512, scram.Auth{User: "a,b=c", Pass: "pencil", Nonce: []byte("fuzz nonce")}},
	} {
		lookup := lookups[seed.mech]
		if seed.auth.User != "user" {
			lookup = func(string) (Credential, bool) { return lookups[seed.mech]("user") }
		}
		first, final := franzSeed(f, seed.mech, seed.auth, lookup)
		f.Add(seed.mech == ScramSHA512, first, final)
	}
	f.Add(false, []byte("n,,n=user,r=x,tokenauth=false"), []byte("c=biws,r=x"+rfcServerNonce+",e=x,p=AAAA"))
	f.Add(true, []byte("y,a=us=3Der,n=us=2Cer,r=x"), []byte("c=eSxhPXVzPTNEZXIs,r=x,p="))

	f.Fuzz(func(t *testing.T, sha512 bool, first, final []byte) {
		mech := ScramSHA256
		if sha512 {
			mech = ScramSHA512
		}
		s, err := NewScram(mech, lookups[mech])
		if err != nil {
			t.Fatal(err)
		}
		s.serverNonce = rfcServerNonce
		reply, done, err := s.Step(first)
		if done {
			t.Fatal("first step reported done")
		}
		if err != nil {
			if reply != nil {
				t.Fatalf("first step failed with a reply %q", reply)
			}
			checkOver(t, s)
			return
		}
		if !bytes.HasPrefix(reply, []byte("r=")) || !bytes.Contains(reply, []byte(rfcServerNonce+",s=")) {
			t.Fatalf("server-first %q is not r=nonce,s=..", reply)
		}
		reply, done, err = s.Step(final)
		switch {
		case err != nil && (done || reply != nil || s.User() != ""):
			t.Fatalf("failed final = %q, %v, user %q", reply, done, s.User())
		case err == nil && (!done || !strings.HasPrefix(string(reply), "v=") || s.User() != "user"):
			t.Fatalf("successful final = %q, %v, user %q", reply, done, s.User())
		}
		checkOver(t, s)
	})
}

// checkOver checks an ended exchange takes no more steps.
func checkOver(t *testing.T, s *Scram) {
	t.Helper()
	if reply, done, err := s.Step([]byte(rfcClientFirst)); !errors.Is(err, ErrExchangeOver) || reply != nil || done {
		t.Fatalf("step after the end = %q, %v, %v", reply, done, err)
	}
}

// FuzzParsePlain checks ParsePlain never panics, and that what it accepts
// is exactly a token it could have been given.
func FuzzParsePlain(f *testing.F) {
	for _, seed := range []string{
		"\x00alice\x00secret", "alice\x00alice\x00secret", "bob\x00alice\x00secret",
		"", "\x00\x00", "a\x00b", "\x00a\x00b\x00c", "\x00ünï\x00p\xff",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, token []byte) {
		user, password, err := ParsePlain(token)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrAuthzid) {
				t.Fatalf("unclassified error %v", err)
			}
			if user != "" || password != "" {
				t.Fatalf("failure returned %q, %q", user, password)
			}
			return
		}
		if user == "" || password == "" {
			t.Fatalf("accepted empty user %q or password %q", user, password)
		}
		plain := "\x00" + user + "\x00" + password
		if string(token) != plain && string(token) != user+plain {
			t.Fatalf("token %q is not its parts %q, %q", token, user, password)
		}
	})
}
