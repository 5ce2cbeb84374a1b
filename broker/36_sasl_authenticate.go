package broker

import (
	"bytes"
	"crypto/subtle"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/sasl"
)

func init() {
	handler(kmsg.SASLAuthenticate, 0, 2, handleSASLAuthenticate)
}

// interBrokerUser is the PLAIN user name of broker id.
func interBrokerUser(id int32) string { return "broker-" + strconv.Itoa(int(id)) }

// handleSASLAuthenticate takes a step of the exchange of the mechanism
// SaslHandshake chose: a PLAIN token ("authzid NUL user NUL password",
// RFC 4616) in one, a SCRAM exchange in two. A broker presenting the
// cluster secret by PLAIN marks the connection as that broker's: its
// Fetch requests with a replica id are then served as a follower's (Kafka's
// CVE-2018-1288 was a client posing as a follower). Any failure ends the
// connection (see client_auth.go).
func handleSASLAuthenticate(b *Broker, r *request, req *kmsg.SASLAuthenticateRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	c := r.conn
	mech := c.sasl.mech
	fail := func(code *kerr.Error, msg string) kmsg.Response {
		c.sasl.failed, c.sasl.scram = true, nil
		resp.ErrorCode, resp.ErrorMessage = code.Code, &msg
		r.refused("SASL authentication failed", "mechanism", mech, "reason", msg)
		return resp
	}
	if mech == "" || c.sasl.done {
		return fail(kerr.IllegalSaslState, "SaslAuthenticate is valid once, after a SaslHandshake")
	}
	failed := "Authentication failed during authentication due to invalid credentials with SASL mechanism " + mech
	if mech == interBrokerMechanism {
		if id, ok := checkInterBrokerToken(req.SASLAuthBytes, b.secret); ok {
			c.peer.Store(id + 1)
			c.sasl.done = true
			return resp
		}
	}
	if !b.clientMechanism(mech) {
		return fail(kerr.SaslAuthenticationFailed, failed)
	}
	if mech == sasl.Plain {
		user, password, err := sasl.ParsePlain(req.SASLAuthBytes)
		if err != nil || !b.checkPlainPassword(user, password) {
			return fail(kerr.SaslAuthenticationFailed, failed)
		}
		if !c.authenticatedAs(user, resp) {
			return fail(kerr.SaslAuthenticationFailed, "authenticating again as another user")
		}
		return resp
	}
	if c.sasl.scram == nil {
		s, err := sasl.NewScram(mech, func(user string) (sasl.Credential, bool) { return b.scramCredential(mech, user) })
		if err != nil {
			return fail(kerr.UnsupportedSaslMechanism, err.Error())
		}
		c.sasl.scram = s
	}
	reply, done, err := c.sasl.scram.Step(req.SASLAuthBytes)
	if err != nil {
		return fail(kerr.SaslAuthenticationFailed, failed)
	}
	resp.SASLAuthBytes = reply
	if done && !c.authenticatedAs(c.sasl.scram.User(), resp) {
		return fail(kerr.SaslAuthenticationFailed, "authenticating again as another user")
	}
	return resp
}

// checkInterBrokerToken returns the broker id a PLAIN token authenticates.
func checkInterBrokerToken(token []byte, secret string) (int32, bool) {
	parts := bytes.Split(token, []byte{0})
	if len(parts) != 3 || secret == "" {
		return -1, false
	}
	user, pass := string(parts[1]), parts[2]
	idStr, ok := strings.CutPrefix(user, "broker-")
	if !ok {
		return -1, false
	}
	id, err := strconv.ParseInt(idStr, 10, 32)
	if err != nil || id < 0 || interBrokerUser(int32(id)) != user {
		return -1, false
	}
	if subtle.ConstantTimeCompare(pass, []byte(secret)) != 1 {
		return -1, false
	}
	return int32(id), true
}
