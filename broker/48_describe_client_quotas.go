package broker

import (
	"cmp"
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
	"github.com/shale-log/shale/broker/clientquota"
	"github.com/shale-log/shale/metadata"
)

func init() {
	handler(kmsg.DescribeClientQuotas, 0, 1, handleDescribeClientQuotas)
}

// handleDescribeClientQuotas lists the client quota entities the filter
// matches, with their quotas (kafka-configs --describe --entity-type
// users/clients/ips). See client_quotas.go.
func handleDescribeClientQuotas(b *Broker, r *request, req *kmsg.DescribeClientQuotasRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeClientQuotasResponse)
	// DESCRIBE_CONFIGS on the cluster.
	if !r.authorizedCluster(acl.DescribeConfigs) {
		resp.ErrorCode, resp.ErrorMessage = kafkaError(errClusterAuthorization), errorMessage(errClusterAuthorization)
		return resp
	}
	comps := make([]clientquota.FilterComponent, 0, len(req.Components))
	for _, c := range req.Components {
		comps = append(comps, clientquota.FilterComponent{Type: c.EntityType, Match: int8(c.MatchType), Name: c.Match})
	}
	if err := clientquota.CheckFilter(comps); err != nil {
		resp.ErrorCode = kerr.InvalidRequest.Code
		resp.ErrorMessage = kmsg.StringPtr(err.Error())
		return resp
	}
	quotas := b.meta.snapshot().clientQuotas
	entities := slices.SortedFunc(maps.Keys(quotas), func(a, b metadata.QuotaEntity) int { return cmp.Compare(a.Key(), b.Key()) })
	for _, e := range entities {
		q := quotas[e]
		if len(q) == 0 || !clientquota.Matches(e, comps, req.Strict) {
			continue
		}
		entry := kmsg.NewDescribeClientQuotasResponseEntry()
		for _, c := range clientquota.Components(e) {
			ee := kmsg.NewDescribeClientQuotasResponseEntryEntity()
			ee.Type, ee.Name = c.Type, c.Name
			entry.Entity = append(entry.Entity, ee)
		}
		for _, k := range slices.Sorted(maps.Keys(q)) {
			v := kmsg.NewDescribeClientQuotasResponseEntryValue()
			v.Key, v.Value = k, q[k]
			entry.Values = append(entry.Values, v)
		}
		resp.Entries = append(resp.Entries, entry)
	}
	return resp
}
