package sasl_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"hash"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/shale-log/shale/broker/sasl"
)

// users builds a lookup knowing each user of passwords under mech.
func users(t *testing.T, mech string, passwords map[string]string) func(string) (sasl.Credential, bool) {
	t.Helper()
	creds := make(map[string]sasl.Credential)
	for user, password := range passwords {
		cred, err := sasl.NewCredential(mech, password, sasl.MinIterations)
		if err != nil {
			t.Fatal(err)
		}
		creds[user] = cred
	}
	return func(user string) (sasl.Credential, bool) {
		cred, ok := creds[user]
		return cred, ok
	}
}

// franzExchange runs franz-go's SCRAM client against a server exchange and
// returns the server's verdict. On success it checks the client accepted
// the server's signature too.
func franzExchange(t *testing.T, mech string, auth scram.Auth, lookup func(string) (sasl.Credential, bool)) (*sasl.Scram, error) {
	t.Helper()
	client := auth.AsSha256Mechanism()
	if mech == sasl.ScramSHA512 {
		client = auth.AsSha512Mechanism()
	}
	session, msg, err := client.Authenticate(context.Background(), "broker:9092")
	if err != nil {
		t.Fatalf("client start: %v", err)
	}
	server, err := sasl.NewScram(mech, lookup)
	if err != nil {
		t.Fatal(err)
	}
	for step := 0; ; step++ {
		reply, done, err := server.Step(msg)
		if err != nil {
			return server, err
		}
		clientDone, next, err := session.Challenge(reply)
		if err != nil {
			t.Fatalf("client rejected server step %d %q: %v", step, reply, err)
		}
		if done != clientDone {
			t.Fatalf("server done %v, client done %v at step %d", done, clientDone, step)
		}
		if done {
			return server, nil
		}
		msg = next
	}
}

func TestScramWithFranzGoClient(t *testing.T) {
	known := map[string]string{
		"alice": "secret",
		"a,b=c": "p,w=d", // a name needing both escapes
		"ünï":   "pässwörd",
	}
	tests := []struct {
		name string
		auth scram.Auth
		want error
	}{
		{"right password", scram.Auth{User: "alice", Pass: "secret"}, nil},
		{"escaped user name", scram.Auth{User: "a,b=c", Pass: "p,w=d"}, nil},
		{"UTF-8 user and password", scram.Auth{User: "ünï", Pass: "pässwörd"}, nil},
		{"authzid of the user", scram.Auth{Zid: "alice", User: "alice", Pass: "secret"}, nil},
		{"escaped authzid of the user", scram.Auth{Zid: "a,b=c", User: "a,b=c", Pass: "p,w=d"}, nil},
		{"wrong password", scram.Auth{User: "alice", Pass: "wrong"}, sasl.ErrAuthFailed},
		{"unknown user", scram.Auth{User: "mallory", Pass: "secret"}, sasl.ErrAuthFailed},
		{"another user's authzid", scram.Auth{Zid: "bob", User: "alice", Pass: "secret"}, sasl.ErrAuthzid},
		{"delegation token", scram.Auth{User: "alice", Pass: "secret", IsToken: true}, sasl.ErrUnsupported},
	}
	for _, mech := range []string{sasl.ScramSHA256, sasl.ScramSHA512} {
		lookup := users(t, mech, known)
		for _, tt := range tests {
			t.Run(mech+"/"+tt.name, func(t *testing.T) {
				server, err := franzExchange(t, mech, tt.auth, lookup)
				if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
					t.Fatalf("exchange = %v, want %v", err, tt.want)
				}
				wantUser := tt.auth.User
				if tt.want != nil {
					wantUser = ""
				}
				if server.User() != wantUser {
					t.Fatalf("User() = %q, want %q", server.User(), wantUser)
				}
			})
		}
	}
}

// A credential for one mechanism does not authenticate under the other.
func TestScramRefusesCredentialOfOtherMechanism(t *testing.T) {
	lookup := users(t, sasl.ScramSHA512, map[string]string{"alice": "secret"})
	_, err := franzExchange(t, sasl.ScramSHA256, scram.Auth{User: "alice", Pass: "secret"}, lookup)
	if !errors.Is(err, sasl.ErrInvalidCredential) {
		t.Fatalf("exchange = %v, want ErrInvalidCredential", err)
	}
}

func TestNewScramRefusesUnknownMechanismAndNilLookup(t *testing.T) {
	lookup := func(string) (sasl.Credential, bool) { return sasl.Credential{}, false }
	if _, err := sasl.NewScram(sasl.Plain, lookup); !errors.Is(err, sasl.ErrUnknownMechanism) {
		t.Fatalf("NewScram(PLAIN) = %v, want ErrUnknownMechanism", err)
	}
	if _, err := sasl.NewScram(sasl.ScramSHA256, nil); err == nil {
		t.Fatal("NewScram with a nil lookup succeeded")
	}
}

func TestScramMechanism(t *testing.T) {
	for mech, want := range map[string]bool{
		sasl.ScramSHA256: true, sasl.ScramSHA512: true,
		sasl.Plain: false, "scram-sha-256": false, "SCRAM-SHA-1": false, "": false,
	} {
		if got := sasl.ScramMechanism(mech); got != want {
			t.Errorf("ScramMechanism(%q) = %v, want %v", mech, got, want)
		}
	}
}

// testClient is a hand-driven SCRAM client, for finals franz-go would never
// send: it computes a valid proof for any client-final-without-proof.
type testClient struct {
	mech, password string
	newHash        func() hash.Hash
	bare           string // client-first-bare
	serverFirst    string
	nonce          string // combined
}

const testGS2 = "n,,"

// start runs the first step of an exchange for user "alice" (password
// "secret") and returns the server and a client ready for the final.
func start(t *testing.T, mech string) (*sasl.Scram, *testClient) {
	t.Helper()
	server, err := sasl.NewScram(mech, users(t, mech, map[string]string{"alice": "secret"}))
	if err != nil {
		t.Fatal(err)
	}
	c := &testClient{mech: mech, password: "secret", newHash: sha256.New, bare: "n=alice,r=clientnonce"}
	if mech == sasl.ScramSHA512 {
		c.newHash = sha512.New
	}
	reply, done, err := server.Step([]byte(testGS2 + c.bare))
	if err != nil || done {
		t.Fatalf("first step = %v, %v", done, err)
	}
	c.serverFirst = string(reply)
	c.nonce = strings.TrimPrefix(strings.Split(c.serverFirst, ",")[0], "r=")
	if !strings.HasPrefix(c.nonce, "clientnonce") || len(c.nonce) < len("clientnonce")+24 {
		t.Fatalf("server-first nonce %q does not extend the client's with enough randomness", c.nonce)
	}
	return server, c
}

// withoutProof is the usual client-final-without-proof.
func (c *testClient) withoutProof() string {
	return "c=" + base64.StdEncoding.EncodeToString([]byte(testGS2)) + ",r=" + c.nonce
}

// proof computes ClientProof for client-final-without-proof wp.
func (c *testClient) proof(t *testing.T, wp string) string {
	t.Helper()
	var salt []byte
	var iterations int
	for _, attr := range strings.Split(c.serverFirst, ",") {
		switch {
		case strings.HasPrefix(attr, "s="):
			salt, _ = base64.StdEncoding.DecodeString(attr[2:])
		case strings.HasPrefix(attr, "i="):
			for _, d := range attr[2:] {
				iterations = iterations*10 + int(d-'0')
			}
		}
	}
	salted, err := sasl.SaltedPassword(c.mech, c.password, salt, iterations)
	if err != nil {
		t.Fatal(err)
	}
	hm := func(key []byte, msg string) []byte {
		m := hmac.New(c.newHash, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	clientKey := hm(salted, "Client Key")
	h := c.newHash()
	h.Write(clientKey)
	signature := hm(h.Sum(nil), c.bare+","+c.serverFirst+","+wp)
	for i := range signature {
		signature[i] ^= clientKey[i]
	}
	return base64.StdEncoding.EncodeToString(signature)
}

// Client-final may carry extensions before the proof; they count in
// AuthMessage and are otherwise ignored.
func TestScramAcceptsFinalExtensions(t *testing.T) {
	server, c := start(t, sasl.ScramSHA256)
	wp := c.withoutProof() + ",foo=bar,Baz=q"
	if _, done, err := server.Step([]byte(wp + ",p=" + c.proof(t, wp))); err != nil || !done {
		t.Fatalf("final with extensions = %v, %v", done, err)
	}
}

func TestScramRefusesMalformedFirst(t *testing.T) {
	tests := []struct {
		name, msg string
		want      error
	}{
		{"empty", "", sasl.ErrMalformed},
		{"no gs2 header", "n=alice,r=abc", sasl.ErrMalformed},
		{"gs2 header unterminated", "n,", sasl.ErrMalformed},
		{"gs2 flag unknown", "x,,n=alice,r=abc", sasl.ErrMalformed},
		{"channel binding required", "p=tls-unique,,n=alice,r=abc", sasl.ErrUnsupported},
		{"authzid without a=", "n,alice,n=alice,r=abc", sasl.ErrMalformed},
		{"empty authzid", "n,a=,n=alice,r=abc", sasl.ErrMalformed},
		{"authzid of another user", "n,a=bob,n=alice,r=abc", sasl.ErrAuthzid},
		{"authzid unescaped differently", "n,a=a=2Cb,n=a=3Db,r=abc", sasl.ErrAuthzid},
		{"mandatory extension", "n,,m=x,n=alice,r=abc", sasl.ErrUnsupported},
		{"no user", "n,,r=abc", sasl.ErrMalformed},
		{"empty user", "n,,n=,r=abc", sasl.ErrMalformed},
		{"bad escape", "n,,n=a=2Db,r=abc", sasl.ErrMalformed},
		{"lower-case escape", "n,,n=a=2cb,r=abc", sasl.ErrMalformed},
		{"truncated escape", "n,,n=ab=2,r=abc", sasl.ErrMalformed},
		{"bare = in name", "n,,n=a=b,r=abc", sasl.ErrMalformed},
		{"NUL in name", "n,,n=a\x00b,r=abc", sasl.ErrMalformed},
		{"name not UTF-8", "n,,n=a\xffb,r=abc", sasl.ErrMalformed},
		{"no nonce", "n,,n=alice", sasl.ErrMalformed},
		{"nonce not r=", "n,,n=alice,s=abc", sasl.ErrMalformed},
		{"empty nonce", "n,,n=alice,r=", sasl.ErrMalformed},
		{"nonce with space", "n,,n=alice,r=a c", sasl.ErrMalformed},
		{"nonce not ASCII", "n,,n=alice,r=ab\xc3\xa9", sasl.ErrMalformed},
		{"empty attribute", "n,,n=alice,r=abc,", sasl.ErrMalformed},
		{"extension without value", "n,,n=alice,r=abc,tokenauth=", sasl.ErrMalformed},
		{"extension not name=value", "n,,n=alice,r=abc,tokenauth", sasl.ErrMalformed},
		{"extension name not letters", "n,,n=alice,r=abc,t0ken=x", sasl.ErrMalformed},
		{"extension value not ASCII", "n,,n=alice,r=abc,tokenauth=f\xc3\xa9", sasl.ErrMalformed},
		{"unknown extension", "n,,n=alice,r=abc,foo=bar", sasl.ErrUnsupported},
		{"token authentication", "n,,n=alice,r=abc,tokenauth=true", sasl.ErrUnsupported},
		{"token authentication any case", "n,,n=alice,r=abc,tokenauth=TRUE", sasl.ErrUnsupported},
		{"tokenauth repeated", "n,,n=alice,r=abc,tokenauth=false,tokenauth=false", sasl.ErrMalformed},
		{"too long", "n,,n=alice,r=" + strings.Repeat("x", sasl.MaxMessage), sasl.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, err := sasl.NewScram(sasl.ScramSHA256, users(t, sasl.ScramSHA256, map[string]string{"alice": "secret"}))
			if err != nil {
				t.Fatal(err)
			}
			reply, done, err := server.Step([]byte(tt.msg))
			if !errors.Is(err, tt.want) || reply != nil || done {
				t.Fatalf("Step(%q) = %q, %v, %v; want %v", tt.msg, reply, done, err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "sasl: ") && !strings.Contains(err.Error(), ": sasl: ") {
				t.Errorf("error %q does not name the package", err)
			}
			if _, _, err := server.Step([]byte("n,,n=alice,r=abc")); !errors.Is(err, sasl.ErrExchangeOver) {
				t.Fatalf("Step after an error = %v, want ErrExchangeOver", err)
			}
		})
	}
}

func TestScramAcceptsFirstVariants(t *testing.T) {
	for _, msg := range []string{
		"n,,n=alice,r=abc",
		"y,,n=alice,r=abc",
		"n,a=alice,n=alice,r=abc",
		"n,,n=alice,r=abc,tokenauth=false",
		"n,,n=alice,r=!\"#$%&'()*+-./:;<=>?@[\\]^_`{|}~",
	} {
		server, err := sasl.NewScram(sasl.ScramSHA256, users(t, sasl.ScramSHA256, map[string]string{"alice": "secret"}))
		if err != nil {
			t.Fatal(err)
		}
		if _, done, err := server.Step([]byte(msg)); err != nil || done {
			t.Errorf("Step(%q) = %v, %v; want the server-first", msg, done, err)
		}
	}
}

// y,, (client could bind channels, thinks we cannot) must come back as
// such in c=: the header is checked as sent.
func TestScramFinalBindsGS2HeaderAsSent(t *testing.T) {
	server, err := sasl.NewScram(sasl.ScramSHA256, users(t, sasl.ScramSHA256, map[string]string{"alice": "secret"}))
	if err != nil {
		t.Fatal(err)
	}
	c := &testClient{mech: sasl.ScramSHA256, password: "secret", newHash: sha256.New, bare: "n=alice,r=abc"}
	reply, _, err := server.Step([]byte("y,," + c.bare))
	if err != nil {
		t.Fatal(err)
	}
	c.serverFirst = string(reply)
	c.nonce = strings.TrimPrefix(strings.Split(c.serverFirst, ",")[0], "r=")
	wp := "c=" + base64.StdEncoding.EncodeToString([]byte("y,,")) + ",r=" + c.nonce
	if _, done, err := server.Step([]byte(wp + ",p=" + c.proof(t, wp))); err != nil || !done {
		t.Fatalf("final = %v, %v", done, err)
	}
}

func TestScramRefusesMalformedFinal(t *testing.T) {
	tests := []struct {
		name  string
		final func(t *testing.T, c *testClient) string
		want  error
	}{
		{"empty", func(*testing.T, *testClient) string { return "" }, sasl.ErrMalformed},
		{"no proof", func(_ *testing.T, c *testClient) string { return c.withoutProof() }, sasl.ErrMalformed},
		{"proof not last", func(t *testing.T, c *testClient) string {
			return c.withoutProof() + ",p=" + c.proof(t, c.withoutProof()) + ",x=y"
		}, sasl.ErrMalformed},
		{"proof not base64", func(_ *testing.T, c *testClient) string { return c.withoutProof() + ",p=!!!!" }, sasl.ErrMalformed},
		{"proof with line break", func(t *testing.T, c *testClient) string {
			p := c.proof(t, c.withoutProof())
			return c.withoutProof() + ",p=" + p[:4] + "\n" + p[4:]
		}, sasl.ErrMalformed},
		{"proof too short", func(_ *testing.T, c *testClient) string {
			return c.withoutProof() + ",p=" + base64.StdEncoding.EncodeToString(make([]byte, 31))
		}, sasl.ErrMalformed},
		{"proof wrong", func(_ *testing.T, c *testClient) string {
			return c.withoutProof() + ",p=" + base64.StdEncoding.EncodeToString(make([]byte, 32))
		}, sasl.ErrAuthFailed},
		{"proof for another AuthMessage", func(t *testing.T, c *testClient) string {
			return c.withoutProof() + ",x=y,p=" + c.proof(t, c.withoutProof())
		}, sasl.ErrAuthFailed},
		{"no channel binding", func(t *testing.T, c *testClient) string {
			wp := "r=" + c.nonce
			return wp + ",p=" + c.proof(t, wp)
		}, sasl.ErrMalformed},
		{"channel binding of another header", func(t *testing.T, c *testClient) string {
			wp := "c=" + base64.StdEncoding.EncodeToString([]byte("y,,")) + ",r=" + c.nonce
			return wp + ",p=" + c.proof(t, wp)
		}, sasl.ErrMalformed},
		{"channel binding not base64", func(t *testing.T, c *testClient) string {
			wp := "c=n,,,r=" + c.nonce
			return wp + ",p=" + c.proof(t, wp)
		}, sasl.ErrMalformed},
		{"channel binding unpadded", func(t *testing.T, c *testClient) string {
			wp := "c=" + base64.RawStdEncoding.EncodeToString([]byte("n,a=alice,")) + ",r=" + c.nonce
			return wp + ",p=" + c.proof(t, wp)
		}, sasl.ErrMalformed},
		{"no nonce", func(t *testing.T, c *testClient) string {
			wp := "c=biws"
			return wp + ",p=" + c.proof(t, wp)
		}, sasl.ErrMalformed},
		{"client nonce only", func(t *testing.T, c *testClient) string {
			wp := "c=biws,r=clientnonce"
			return wp + ",p=" + c.proof(t, wp)
		}, sasl.ErrMalformed},
		{"nonce extended", func(t *testing.T, c *testClient) string {
			wp := "c=biws,r=" + c.nonce + "x"
			return wp + ",p=" + c.proof(t, wp)
		}, sasl.ErrMalformed},
		{"repeated attribute", func(t *testing.T, c *testClient) string {
			wp := c.withoutProof() + ",r=" + c.nonce
			return wp + ",p=" + c.proof(t, wp)
		}, sasl.ErrMalformed},
		{"malformed extension", func(t *testing.T, c *testClient) string {
			wp := c.withoutProof() + ",x"
			return wp + ",p=" + c.proof(t, wp)
		}, sasl.ErrMalformed},
		{"too long", func(t *testing.T, c *testClient) string {
			wp := c.withoutProof() + ",x=" + strings.Repeat("y", sasl.MaxMessage)
			return wp + ",p=" + c.proof(t, wp)
		}, sasl.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, c := start(t, sasl.ScramSHA256)
			final := tt.final(t, c)
			reply, done, err := server.Step([]byte(final))
			if !errors.Is(err, tt.want) || reply != nil || done {
				t.Fatalf("Step(%q) = %q, %v, %v; want %v", final, reply, done, err, tt.want)
			}
			if server.User() != "" {
				t.Fatalf("User() = %q after a failure", server.User())
			}
			wp := c.withoutProof()
			if _, _, err := server.Step([]byte(wp + ",p=" + c.proof(t, wp))); !errors.Is(err, sasl.ErrExchangeOver) {
				t.Fatalf("valid final after an error = %v, want ErrExchangeOver", err)
			}
		})
	}
}

func TestScramStepAfterDoneRefused(t *testing.T) {
	server, c := start(t, sasl.ScramSHA512)
	wp := c.withoutProof()
	final := []byte(wp + ",p=" + c.proof(t, wp))
	if _, done, err := server.Step(final); err != nil || !done {
		t.Fatalf("final = %v, %v", done, err)
	}
	for _, msg := range [][]byte{final, []byte("n,,n=alice,r=abc"), nil} {
		if reply, done, err := server.Step(msg); !errors.Is(err, sasl.ErrExchangeOver) || reply != nil || done {
			t.Fatalf("Step after done = %q, %v, %v; want ErrExchangeOver", reply, done, err)
		}
	}
	if server.User() != "alice" {
		t.Fatalf("User() = %q after done, want alice", server.User())
	}
}

func TestParsePlain(t *testing.T) {
	tests := []struct {
		name, token    string
		user, password string
		want           error
	}{
		{"no authzid", "\x00alice\x00secret", "alice", "secret", nil},
		{"authzid of the user", "alice\x00alice\x00secret", "alice", "secret", nil},
		{"UTF-8", "\x00ünï\x00pässwörd", "ünï", "pässwörd", nil},
		{"password with spaces", "\x00alice\x00 s e c ", "alice", " s e c ", nil},
		{"empty", "", "", "", sasl.ErrMalformed},
		{"one part", "alice", "", "", sasl.ErrMalformed},
		{"two parts", "alice\x00secret", "", "", sasl.ErrMalformed},
		{"four parts", "\x00alice\x00secret\x00", "", "", sasl.ErrMalformed},
		{"empty user", "\x00\x00secret", "", "", sasl.ErrMalformed},
		{"empty password", "\x00alice\x00", "", "", sasl.ErrMalformed},
		{"not UTF-8", "\x00alice\x00s\xffcret", "", "", sasl.ErrMalformed},
		{"authzid of another user", "bob\x00alice\x00secret", "", "", sasl.ErrAuthzid},
		{"too long", "\x00alice\x00" + strings.Repeat("x", sasl.MaxMessage), "", "", sasl.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, password, err := sasl.ParsePlain([]byte(tt.token))
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("ParsePlain = %v, want %v", err, tt.want)
			}
			if user != tt.user || password != tt.password {
				t.Fatalf("ParsePlain = %q, %q; want %q, %q", user, password, tt.user, tt.password)
			}
		})
	}
}

func TestCheckPassword(t *testing.T) {
	for _, mech := range []string{sasl.ScramSHA256, sasl.ScramSHA512} {
		cred, err := sasl.NewCredential(mech, "secret", sasl.MinIterations)
		if err != nil {
			t.Fatal(err)
		}
		other := sasl.ScramSHA512
		if mech == sasl.ScramSHA512 {
			other = sasl.ScramSHA256
		}
		for _, tt := range []struct {
			mech, password string
			want           bool
		}{
			{mech, "secret", true},
			{mech, "Secret", false},
			{mech, "secret ", false},
			{mech, "", false},
			{other, "secret", false},
			{sasl.Plain, "secret", false},
		} {
			if got := cred.CheckPassword(tt.mech, tt.password); got != tt.want {
				t.Errorf("%s credential: CheckPassword(%s, %q) = %v, want %v", mech, tt.mech, tt.password, got, tt.want)
			}
		}
	}
}

// A credential out of bounds matches nothing rather than running Hi for
// as long as its iterations say.
func TestCheckPasswordRefusesCredentialOutOfBounds(t *testing.T) {
	cred, err := sasl.NewCredential(sasl.ScramSHA256, "secret", sasl.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	cred.Iterations = 1 << 30
	if cred.CheckPassword(sasl.ScramSHA256, "secret") {
		t.Fatal("CheckPassword accepted a credential with 2^30 iterations")
	}
}

func TestCredentialFromSaltedAgreesWithNewCredential(t *testing.T) {
	for _, mech := range []string{sasl.ScramSHA256, sasl.ScramSHA512} {
		for _, iterations := range []int{sasl.MinIterations, 8192, sasl.MaxIterations} {
			cred, err := sasl.NewCredential(mech, "secret", iterations)
			if err != nil {
				t.Fatal(err)
			}
			if len(cred.Salt) != 24 || cred.Iterations != iterations {
				t.Fatalf("NewCredential made a %d-byte salt and %d iterations", len(cred.Salt), cred.Iterations)
			}
			salted, err := sasl.SaltedPassword(mech, "secret", cred.Salt, iterations)
			if err != nil {
				t.Fatal(err)
			}
			fromSalted, err := sasl.CredentialFromSalted(mech, salted, cred.Salt, iterations)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(fromSalted.Salt, cred.Salt) || fromSalted.Iterations != cred.Iterations ||
				!bytes.Equal(fromSalted.StoredKey, cred.StoredKey) || !bytes.Equal(fromSalted.ServerKey, cred.ServerKey) {
				t.Fatalf("%s, %d iterations: CredentialFromSalted = %+v, NewCredential = %+v", mech, iterations, fromSalted, cred)
			}
		}
	}
}

func TestNewCredentialSaltsFreshly(t *testing.T) {
	a, err := sasl.NewCredential(sasl.ScramSHA256, "secret", sasl.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	b, err := sasl.NewCredential(sasl.ScramSHA256, "secret", sasl.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Salt, b.Salt) || bytes.Equal(a.StoredKey, b.StoredKey) {
		t.Fatal("two credentials for the same password share a salt or key")
	}
}

func TestCredentialBoundsRefused(t *testing.T) {
	salt := make([]byte, 24)
	salted := make([]byte, sha256.Size)
	tests := []struct {
		name string
		err  func() error
		want error
	}{
		{"NewCredential unknown mechanism", func() error {
			_, err := sasl.NewCredential(sasl.Plain, "secret", sasl.MinIterations)
			return err
		}, sasl.ErrUnknownMechanism},
		{"NewCredential too few iterations", func() error {
			_, err := sasl.NewCredential(sasl.ScramSHA256, "secret", sasl.MinIterations-1)
			return err
		}, sasl.ErrInvalidCredential},
		{"NewCredential too many iterations", func() error {
			_, err := sasl.NewCredential(sasl.ScramSHA512, "secret", sasl.MaxIterations+1)
			return err
		}, sasl.ErrInvalidCredential},
		{"NewCredential empty password", func() error {
			_, err := sasl.NewCredential(sasl.ScramSHA256, "", sasl.MinIterations)
			return err
		}, sasl.ErrInvalidCredential},
		{"CredentialFromSalted unknown mechanism", func() error {
			_, err := sasl.CredentialFromSalted("SCRAM-SHA-1", salted, salt, sasl.MinIterations)
			return err
		}, sasl.ErrUnknownMechanism},
		{"CredentialFromSalted empty salt", func() error {
			_, err := sasl.CredentialFromSalted(sasl.ScramSHA256, salted, nil, sasl.MinIterations)
			return err
		}, sasl.ErrInvalidCredential},
		{"CredentialFromSalted salted of another hash's size", func() error {
			_, err := sasl.CredentialFromSalted(sasl.ScramSHA512, salted, salt, sasl.MinIterations)
			return err
		}, sasl.ErrInvalidCredential},
		{"CredentialFromSalted too few iterations", func() error {
			_, err := sasl.CredentialFromSalted(sasl.ScramSHA256, salted, salt, 0)
			return err
		}, sasl.ErrInvalidCredential},
		{"SaltedPassword too many iterations", func() error {
			_, err := sasl.SaltedPassword(sasl.ScramSHA256, "secret", salt, 1<<30)
			return err
		}, sasl.ErrInvalidCredential},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.err(); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}
