package broker

import (
	"bytes"
	"crypto/subtle"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.SASLAuthenticate, 0, 2, handleSASLAuthenticate)
}

// interBrokerUser is the PLAIN user name of broker id.
func interBrokerUser(id int32) string { return "broker-" + strconv.Itoa(int(id)) }

// handleSASLAuthenticate checks a PLAIN token ("authzid NUL user NUL
// password", RFC 4616). A broker presenting the cluster secret marks the
// connection as that broker's: its Fetch requests with a replica id are
// then served as a follower's. Anything else fails, and the connection
// stays a client's (Kafka's CVE-2018-1288 was a client posing as a
// follower).
func handleSASLAuthenticate(b *Broker, r *request, req *kmsg.SASLAuthenticateRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	id, ok := checkInterBrokerToken(req.SASLAuthBytes, b.secret)
	if !ok {
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "authentication failed"
		resp.ErrorMessage = &msg
		return resp
	}
	r.conn.peer.Store(id + 1)
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
