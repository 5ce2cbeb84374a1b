package sasl

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"
)

// MinIterations and MaxIterations bound a SCRAM credential's iterations, as
// Kafka's (4096 and 16384). The upper bound matters here too: CheckPassword
// runs Hi on the broker, so a huge count would be a denial of service.
const MinIterations, MaxIterations = 4096, 16384

// saltLen is the length of the salt NewCredential draws. 24 random bytes
// (192 bits) is well beyond the 128 bits NIST SP 800-132 asks for, and it
// is what franz-go's kadm generates for AlterUserScramCredentials. Using
// the same length means the fake salt shown for an unknown user (see
// Scram) looks like a real user's.
const saltLen = 24

// Credential is a SCRAM credential as stored: never the password. Salt and
// Iterations are sent to the client; StoredKey checks its proof; ServerKey
// signs the server's final message.
type Credential struct {
	Salt       []byte `json:"salt"`
	Iterations int    `json:"iterations"`
	StoredKey  []byte `json:"stored_key"`
	ServerKey  []byte `json:"server_key"`
}

// ScramMechanism reports whether mech is one of the SCRAM mechanisms.
func ScramMechanism(mech string) bool {
	_, err := scramHash(mech)
	return err == nil
}

// scramHash is the hash a SCRAM mechanism is built on.
func scramHash(mech string) (func() hash.Hash, error) {
	switch mech {
	case ScramSHA256:
		return sha256.New, nil
	case ScramSHA512:
		return sha512.New, nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownMechanism, mech)
}

// CredentialFromSalted derives the stored credential from a salted password
// (SaltedPassword = Hi(password, salt, iterations)), which is what Kafka's
// AlterUserScramCredentials request carries: StoredKey =
// H(HMAC(salted, "Client Key")), ServerKey = HMAC(salted, "Server Key"), H
// and HMAC of mech's hash. It fails for an unknown mechanism, and (with
// ErrInvalidCredential, Kafka's UNACCEPTABLE_CREDENTIAL) for an empty salt,
// iterations outside [MinIterations, MaxIterations], or a salted password
// that is not the hash's size: Hi never yields one, so a client could never
// match it.
func CredentialFromSalted(mech string, salted, salt []byte, iterations int) (Credential, error) {
	newHash, err := scramHash(mech)
	if err != nil {
		return Credential{}, err
	}
	if err := checkSaltIterations(salt, iterations); err != nil {
		return Credential{}, err
	}
	if size := newHash().Size(); len(salted) != size {
		return Credential{}, fmt.Errorf("%w: salted password of %d bytes, %s wants %d",
			ErrInvalidCredential, len(salted), mech, size)
	}
	return Credential{
		Salt:       append([]byte(nil), salt...),
		Iterations: iterations,
		StoredKey:  storedKey(newHash, salted),
		ServerKey:  mac(newHash, salted, []byte("Server Key")),
	}, nil
}

// NewCredential salts password with a fresh random salt of saltLen bytes
// and derives the credential. It fails for an unknown mechanism, an empty
// password (PLAIN and Kafka's clients refuse one, so it could never log
// in), or iterations outside [MinIterations, MaxIterations].
func NewCredential(mech, password string, iterations int) (Credential, error) {
	if password == "" {
		return Credential{}, fmt.Errorf("%w: empty password", ErrInvalidCredential)
	}
	salt := make([]byte, saltLen)
	rand.Read(salt) // never fails (crypto/rand since Go 1.24)
	salted, err := SaltedPassword(mech, password, salt, iterations)
	if err != nil {
		return Credential{}, err
	}
	return CredentialFromSalted(mech, salted, salt, iterations)
}

// SaltedPassword is Hi(password, salt, iterations) with mech's hash: PBKDF2
// with HMAC, one hash-size block (RFC 5802 section 2.2). This is the
// client's side of the derivation, used by NewCredential, CheckPassword and
// tools. Iterations are held to [MinIterations, MaxIterations] because the
// broker runs this for PLAIN logins.
func SaltedPassword(mech, password string, salt []byte, iterations int) ([]byte, error) {
	newHash, err := scramHash(mech)
	if err != nil {
		return nil, err
	}
	if err := checkSaltIterations(salt, iterations); err != nil {
		return nil, err
	}
	salted, err := pbkdf2.Key(newHash, password, salt, iterations, newHash().Size())
	if err != nil {
		return nil, fmt.Errorf("sasl: salting password: %w", err)
	}
	return salted, nil
}

// CheckPassword reports whether password matches c under mech, comparing
// the derived StoredKey in constant time. It lets PLAIN authenticate
// against the SCRAM credentials. A credential invalid for mech matches no
// password.
func (c Credential) CheckPassword(mech, password string) bool {
	newHash, err := scramHash(mech)
	if err != nil || c.validate(newHash) != nil {
		return false
	}
	salted, err := SaltedPassword(mech, password, c.Salt, c.Iterations)
	if err != nil {
		return false
	}
	return hmac.Equal(storedKey(newHash, salted), c.StoredKey)
}

// validate checks a stored credential before an exchange relies on it: a
// key of the wrong length for the hash (say a SHA-512 credential looked up
// for SCRAM-SHA-256) could never verify, and iterations out of bounds would
// make honest clients refuse or spin.
func (c Credential) validate(newHash func() hash.Hash) error {
	if err := checkSaltIterations(c.Salt, c.Iterations); err != nil {
		return err
	}
	size := newHash().Size()
	if len(c.StoredKey) != size || len(c.ServerKey) != size {
		return fmt.Errorf("%w: keys of %d and %d bytes, want %d",
			ErrInvalidCredential, len(c.StoredKey), len(c.ServerKey), size)
	}
	return nil
}

// checkSaltIterations applies the bounds every credential obeys.
func checkSaltIterations(salt []byte, iterations int) error {
	if len(salt) == 0 {
		return fmt.Errorf("%w: empty salt", ErrInvalidCredential)
	}
	if iterations < MinIterations || iterations > MaxIterations {
		return fmt.Errorf("%w: %d iterations, want %d to %d",
			ErrInvalidCredential, iterations, MinIterations, MaxIterations)
	}
	return nil
}

// storedKey is H(HMAC(salted, "Client Key")).
func storedKey(newHash func() hash.Hash, salted []byte) []byte {
	h := newHash()
	h.Write(mac(newHash, salted, []byte("Client Key")))
	return h.Sum(nil)
}

// mac is HMAC(key, msg) with newHash.
func mac(newHash func() hash.Hash, key, msg []byte) []byte {
	m := hmac.New(newHash, key)
	m.Write(msg)
	return m.Sum(nil)
}
