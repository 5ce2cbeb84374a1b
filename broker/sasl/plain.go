package sasl

import (
	"bytes"
	"fmt"
	"unicode/utf8"
)

// ParsePlain splits a PLAIN token "authzid NUL authcid NUL passwd" (RFC
// 4616) into the user (authcid) and password. It refuses a token longer
// than MaxMessage, one not of exactly three parts, one not UTF-8, an empty
// user or password, and (as Kafka does) an authzid that is neither empty
// nor the user: authenticating as one user to act as another is not
// offered.
func ParsePlain(token []byte) (user, password string, err error) {
	if len(token) > MaxMessage {
		return "", "", fmt.Errorf("%w: PLAIN token of %d bytes exceeds %d", ErrMalformed, len(token), MaxMessage)
	}
	parts := bytes.Split(token, []byte{0})
	if len(parts) != 3 {
		return "", "", fmt.Errorf("%w: PLAIN token has %d parts, want 3", ErrMalformed, len(parts))
	}
	if !utf8.Valid(token) {
		return "", "", fmt.Errorf("%w: PLAIN token is not UTF-8", ErrMalformed)
	}
	authzid, user, password := string(parts[0]), string(parts[1]), string(parts[2])
	if user == "" {
		return "", "", fmt.Errorf("%w: PLAIN user is empty", ErrMalformed)
	}
	if password == "" {
		return "", "", fmt.Errorf("%w: PLAIN password is empty", ErrMalformed)
	}
	if authzid != "" && authzid != user {
		return "", "", ErrAuthzid
	}
	return user, password, nil
}
