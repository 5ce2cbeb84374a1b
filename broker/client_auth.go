package broker

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/sasl"
	"github.com/shale-log/shale/metadata"
)

// Client authentication (Kafka's SASL_PLAINTEXT listener, KIP-43 and
// KIP-84). With Config.SASLMechanisms set, a connection may send nothing
// but ApiVersions, SaslHandshake and SaslAuthenticate until it has
// authenticated; anything else closes it, as Kafka's authenticator does.
// Users are SCRAM credentials in etcd (AlterUserScramCredentials,
// `shale user`), never passwords: SCRAM-SHA-256/512 prove the password
// without sending it, and PLAIN, which sends it, is checked against the
// same credentials (Kafka's PLAIN reads a static JAAS file instead; one
// store of users is one thing to manage, and a password changed there
// changes for both). A broker's own connections authenticate with PLAIN as
// user broker-<id> and the cluster secret whatever the listener (they may
// then fetch as followers). Without SASL mechanisms a client may still
// authenticate; an unauthenticated one is user ANONYMOUS.
//
// A failed authentication ends the connection: the client is answered
// SASL_AUTHENTICATION_FAILED and the next request closes it, so that one
// connection costs at most one password check (each is thousands of
// HMAC rounds). What a user may do then is for the ACLs (authorize.go).
//
// With Config.ConnectionsMaxReauth (KIP-368) a client's session ends that
// long after it authenticated (SaslAuthenticate tells it when): the
// client authenticates again on the same connection, as the same user,
// with SaslHandshake and SaslAuthenticate between its requests, or its
// next request after the end closes the connection. Brokers' own
// connections have no end.

// saslRequired reports whether clients must authenticate.
func (b *Broker) saslRequired() bool { return len(b.cfg.SASLMechanisms) > 0 }

// offeredMechanisms are the mechanisms SaslHandshake offers: the clients'
// and PLAIN, by which brokers authenticate to each other; all of Shale's
// while none is required (clientMechanism).
func (b *Broker) offeredMechanisms() []string {
	if !b.saslRequired() {
		return allMechanisms
	}
	if slices.Contains(b.cfg.SASLMechanisms, sasl.Plain) {
		return b.cfg.SASLMechanisms
	}
	return append(slices.Clip(b.cfg.SASLMechanisms), sasl.Plain)
}

// allMechanisms are the SASL mechanisms Shale serves.
var allMechanisms = []string{sasl.Plain, sasl.ScramSHA256, sasl.ScramSHA512}

// clientMechanism reports whether clients may authenticate with mech:
// one of Config.SASLMechanisms, or any of Shale's while none is required
// (a client that authenticates on a PLAINTEXT listener gets its user,
// for quotas).
func (b *Broker) clientMechanism(mech string) bool {
	if !b.saslRequired() {
		return mech == sasl.Plain || sasl.ScramMechanism(mech)
	}
	return slices.Contains(b.cfg.SASLMechanisms, mech)
}

// scramCredential is user's credential for mech, from the metadata.
func (b *Broker) scramCredential(mech, user string) (sasl.Credential, bool) {
	c, ok := b.meta.snapshot().scramCredentials[user][mech]
	return sasl.Credential(c), ok
}

// checkPlainPassword reports whether password is user's, by any of the
// user's SCRAM credentials (the strongest first). An unknown user costs
// a check all the same, so that how long it takes does not tell which
// users exist.
func (b *Broker) checkPlainPassword(user, password string) bool {
	creds := b.meta.snapshot().scramCredentials[user]
	for _, mech := range []string{sasl.ScramSHA512, sasl.ScramSHA256} {
		if c, ok := creds[mech]; ok {
			return sasl.Credential(c).CheckPassword(mech, password)
		}
	}
	unknownUser().CheckPassword(sasl.ScramSHA512, password)
	return false
}

// unknownUser is the credential an unknown user's PLAIN password is
// checked against: no password matches it.
var unknownUser = sync.OnceValue(func() sasl.Credential {
	c, err := sasl.NewCredential(sasl.ScramSHA512, rand.Text(), sasl.MinIterations)
	if err != nil {
		panic(err) // a valid mechanism, password and count
	}
	return c
})

// authenticated reports whether the connection authenticated, as a
// client's user or as a broker.
func (c *conn) authenticated() bool { return c.user.Load() != nil || c.peer.Load() != 0 }

// mayRequest reports whether the connection may send a request of key
// now: nothing after a failed authentication, and only the SASL exchange
// (and ApiVersions, which precedes it) before authenticating where the
// broker requires it.
func (c *conn) mayRequest(key int16) bool {
	exchange := false
	switch kmsg.Key(key) {
	case kmsg.ApiVersions, kmsg.SASLHandshake, kmsg.SASLAuthenticate:
		exchange = true
	}
	switch {
	case c.sasl.failed:
		return false
	case c.sasl.expired():
		return exchange // the session ended: authenticate again, or go
	case !c.b.saslRequired() || c.authenticated():
		return true
	}
	return exchange
}

// refuseBeforeAuth closes the connection for a request mayRequest
// refused, leaving a trace of why.
func (c *conn) refuseBeforeAuth(h requestHeader) error {
	why := "request before SASL authentication: closing the connection"
	switch {
	case c.sasl.failed:
		why = "request after a failed SASL authentication: closing the connection"
	case c.sasl.expired():
		why = "request after the SASL session ended (connections.max.reauth.ms): closing the connection"
	}
	c.b.refusedLog.log(c.log, why, "client_id", h.clientID, "api", kmsg.NameForKey(h.key))
	c.refusalLogged = true
	return fmt.Errorf("%w: %s before authenticating", errBadRequest, kmsg.NameForKey(h.key))
}

// saslState is a connection's SASL exchange (owned by the reader, which
// runs both SASL handlers).
type saslState struct {
	// mech is the mechanism SaslHandshake chose ("" before it).
	mech string
	// scram is the SCRAM exchange under way.
	scram *sasl.Scram
	// done: the exchange authenticated the connection; failed: it
	// failed, and the connection ends.
	done, failed bool
	// ends is when the session ends (KIP-368; zero: never); again: the
	// exchange under way authenticates the connection again.
	ends  time.Time
	again bool
}

// expired reports whether the session has ended (asked of every request:
// the clock is read only for sessions that end).
func (s *saslState) expired() bool { return !s.ends.IsZero() && time.Now().After(s.ends) }

// reauthenticating reports whether a SaslHandshake starts a new exchange
// on a connection authenticated already: sessions end
// (ConnectionsMaxReauth), and the last exchange was done.
func (c *conn) reauthenticating() bool { return c.sasl.done && !c.sasl.ends.IsZero() }

// authenticatedAs ends a successful exchange as user, and starts its
// session; false when a new authentication names another user than the
// connection's (KIP-368 does not let a session change hands).
func (c *conn) authenticatedAs(user string, resp *kmsg.SASLAuthenticateResponse) bool {
	if prev := c.user.Load(); c.sasl.again && (prev == nil || *prev != user) {
		return false
	}
	c.user.Store(&user)
	c.sasl.scram, c.sasl.done, c.sasl.again = nil, true, false
	if life := c.b.cfg.ConnectionsMaxReauth; life > 0 {
		c.sasl.ends = time.Now().Add(life)
		resp.SessionLifetimeMillis = life.Milliseconds()
	}
	return true
}

// ensureBootstrapUser gives user SCRAM-SHA-256 and SCRAM-SHA-512
// credentials for password unless the user has credentials already: the
// first user of a cluster whose listener requires SASL, who then adds the
// others (Kafka's kafka-storage format --add-scram). A password changed
// since stays changed.
func ensureBootstrapUser(ctx context.Context, store *metadata.Store, user, password string) error {
	creds := map[string]metadata.ScramCredential{}
	for _, mech := range []string{sasl.ScramSHA256, sasl.ScramSHA512} {
		c, err := sasl.NewCredential(mech, password, sasl.MinIterations)
		if err != nil {
			return err
		}
		creds[mech] = metadata.ScramCredential(c)
	}
	_, err := store.UpdateScramCredentials(ctx, user, func(cur map[string]metadata.ScramCredential) (map[string]metadata.ScramCredential, error) {
		if len(cur) > 0 {
			return cur, nil
		}
		return creds, nil
	})
	return err
}
