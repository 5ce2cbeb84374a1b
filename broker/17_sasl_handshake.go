package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	// v0 (SASL tokens sent unframed after the handshake) is not served.
	handler(kmsg.SASLHandshake, 1, 1, handleSASLHandshake)
}

// interBrokerMechanism is the one SASL mechanism served: PLAIN, by which a
// broker's replica fetcher presents the cluster secret (user
// "broker-<id>"). Client authentication is not offered yet.
const interBrokerMechanism = "PLAIN"

func handleSASLHandshake(b *Broker, r *request, req *kmsg.SASLHandshakeRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
	resp.SupportedMechanisms = []string{interBrokerMechanism}
	if req.Mechanism != interBrokerMechanism {
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
	}
	return resp
}
