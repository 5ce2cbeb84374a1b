// Package clientquota is the pure part of Kafka's client quotas (KIP-13,
// KIP-55, KIP-219, KIP-546): which quota applies to a client, the sampled
// byte rate it is measured with, the throttle time a violation costs, and
// the entity filters of DescribeClientQuotas. The broker stores quotas in
// etcd (metadata.QuotaEntity), records bytes and answers with the
// throttle; this package knows nothing of either.
package clientquota

import (
	"github.com/shale-log/shale/metadata"
)

// Quota keys Kafka defines for users and client ids, and for IPs.
const (
	ProducerByteRate       = "producer_byte_rate"
	ConsumerByteRate       = "consumer_byte_rate"
	RequestPercentage      = "request_percentage"
	ControllerMutationRate = "controller_mutation_rate"
	ConnectionCreationRate = "connection_creation_rate"
)

// Entity component types.
const (
	TypeUser     = "user"
	TypeClientID = "client-id"
	TypeIP       = "ip"
)

// Sensor names whose traffic a quota bounds: the user and client id its
// rate is kept for. As in Kafka, a client id quota is shared by every
// user's connections of that client id, a default one is kept for each
// client id apart, and so on: the entity that set the quota, with the
// client's own names in place of defaults.
type Sensor struct {
	User, ClientID string
	// HasUser and HasClientID: the quota's entity has the component.
	HasUser, HasClientID bool
}

// Resolve finds the quota of key that applies to a client of user and
// clientID among quotas, in Kafka's order of precedence: user and client
// id, user and default client id, user, default user and client id,
// default user and default client id, default user, client id, default
// client id. ok is false when none sets key.
func Resolve(quotas map[metadata.QuotaEntity]map[string]float64, user, clientID, key string) (bound float64, s Sensor, ok bool) {
	name := func(n string) metadata.QuotaName { return metadata.QuotaName{Set: true, Name: n} }
	def := metadata.QuotaName{Set: true, Default: true}
	none := metadata.QuotaName{}
	for _, c := range [...]struct {
		e      metadata.QuotaEntity
		hasU   bool
		hasCID bool
	}{
		{metadata.QuotaEntity{User: name(user), ClientID: name(clientID)}, true, true},
		{metadata.QuotaEntity{User: name(user), ClientID: def}, true, true},
		{metadata.QuotaEntity{User: name(user), ClientID: none}, true, false},
		{metadata.QuotaEntity{User: def, ClientID: name(clientID)}, true, true},
		{metadata.QuotaEntity{User: def, ClientID: def}, true, true},
		{metadata.QuotaEntity{User: def, ClientID: none}, true, false},
		{metadata.QuotaEntity{ClientID: name(clientID)}, false, true},
		{metadata.QuotaEntity{ClientID: def}, false, true},
	} {
		if v, found := quotas[c.e][key]; found {
			s := Sensor{HasUser: c.hasU, HasClientID: c.hasCID}
			if c.hasU {
				s.User = user
			}
			if c.hasCID {
				s.ClientID = clientID
			}
			return v, s, true
		}
	}
	return 0, Sensor{}, false
}
