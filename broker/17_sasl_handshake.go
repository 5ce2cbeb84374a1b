package broker

import (
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/sasl"
)

func init() {
	// v0 is advertised, as Kafka does, because librdkafka authenticates
	// only with brokers that list it (it then sends v1). A client that
	// does send v0 follows it with SASL tokens outside Kafka's framing,
	// which are not served: the connection closes on the first.
	handler(kmsg.SASLHandshake, 0, 1, handleSASLHandshake)
}

// interBrokerMechanism is the SASL mechanism by which a broker's replica
// fetcher presents the cluster secret (user "broker-<id>").
const interBrokerMechanism = sasl.Plain

// handleSASLHandshake chooses the connection's SASL mechanism, once,
// before SaslAuthenticate. See client_auth.go.
func handleSASLHandshake(b *Broker, r *request, req *kmsg.SASLHandshakeRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
	resp.SupportedMechanisms = b.offeredMechanisms()
	c := r.conn
	switch {
	case c.sasl.mech != "" && !c.reauthenticating():
		resp.ErrorCode = kerr.IllegalSaslState.Code
		c.sasl.failed = true
	case !slices.Contains(resp.SupportedMechanisms, req.Mechanism):
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		// A session authenticating again fails with it (KIP-368).
		c.sasl.failed = c.sasl.failed || c.reauthenticating()
	default:
		// A new exchange: the connection's first, or one that
		// authenticates it again, its session ending.
		c.sasl.again = c.reauthenticating()
		c.sasl.mech, c.sasl.done = req.Mechanism, false
	}
	return resp
}
