package broker

import (
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/sasl"
)

func init() {
	// v0 (SASL tokens sent unframed after the handshake) is not served.
	handler(kmsg.SASLHandshake, 1, 1, handleSASLHandshake)
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
	case c.sasl.mech != "":
		resp.ErrorCode = kerr.IllegalSaslState.Code
		c.sasl.failed = true
	case !slices.Contains(resp.SupportedMechanisms, req.Mechanism):
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
	default:
		c.sasl.mech = req.Mechanism
	}
	return resp
}
