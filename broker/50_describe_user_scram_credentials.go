package broker

import (
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.DescribeUserSCRAMCredentials, 0, 0, handleDescribeUserSCRAMCredentials)
}

// scramMechanisms are the SCRAM mechanisms by their code in Kafka's
// requests (ScramMechanism: 1 SCRAM-SHA-256, 2 SCRAM-SHA-512).
var scramMechanisms = map[int8]string{1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}

// scramMechanismCode is mech's code in Kafka's requests (0: unknown).
func scramMechanismCode(mech string) int8 {
	for code, m := range scramMechanisms {
		if m == mech {
			return code
		}
	}
	return 0
}

// handleDescribeUserSCRAMCredentials lists users' SCRAM mechanisms and
// iterations (never their keys): those asked for, or all (kafka-configs
// --describe --entity-type users). As Kafka's: a user asked for twice
// is DUPLICATE_RESOURCE, one without credentials RESOURCE_NOT_FOUND.
func handleDescribeUserSCRAMCredentials(b *Broker, r *request, req *kmsg.DescribeUserSCRAMCredentialsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeUserSCRAMCredentialsResponse)
	// DESCRIBE on the cluster; refused, the answer and each user asked
	// for say so, as Kafka's.
	if !r.authorizedCluster(acl.Describe) {
		resp.ErrorCode, resp.ErrorMessage = kafkaError(errClusterAuthorization), errorMessage(errClusterAuthorization)
		for _, u := range req.Users {
			res := kmsg.NewDescribeUserSCRAMCredentialsResponseResult()
			res.User = u.Name
			res.ErrorCode, res.ErrorMessage = resp.ErrorCode, resp.ErrorMessage
			resp.Results = append(resp.Results, res)
		}
		return resp
	}
	creds := b.meta.snapshot().scramCredentials
	users := slices.Sorted(maps.Keys(creds))
	asked := map[string]int{}
	if len(req.Users) > 0 {
		users = users[:0]
		for _, u := range req.Users {
			if asked[u.Name]++; asked[u.Name] == 1 {
				users = append(users, u.Name)
			}
		}
	}
	for _, u := range users {
		res := kmsg.NewDescribeUserSCRAMCredentialsResponseResult()
		res.User = u
		switch {
		case asked[u] > 1:
			res.ErrorCode = kerr.DuplicateResource.Code
			res.ErrorMessage = kmsg.StringPtr("Cannot describe SCRAM credentials for the same user twice in a single request: " + u)
		case len(creds[u]) == 0:
			res.ErrorCode = kerr.ResourceNotFound.Code
			res.ErrorMessage = kmsg.StringPtr("Attempt to describe a user credential that does not exist: " + u)
		}
		if res.ErrorCode == 0 {
			for _, mech := range slices.Sorted(maps.Keys(creds[u])) {
				info := kmsg.NewDescribeUserSCRAMCredentialsResponseResultCredentialInfo()
				info.Mechanism, info.Iterations = scramMechanismCode(mech), int32(creds[u][mech].Iterations)
				res.CredentialInfos = append(res.CredentialInfos, info)
			}
		}
		resp.Results = append(resp.Results, res)
	}
	return resp
}
