package broker

import (
	"sort"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.ApiVersions, 0, 4, handleApiVersions)
}

// handleApiVersions advertises exactly the keys and versions in the
// handler table.
func handleApiVersions(b *Broker, r *request, req *kmsg.ApiVersionsRequest) kmsg.Response {
	return apiVersionsResponse(req.Version)
}

func apiVersionsResponse(version int16) *kmsg.ApiVersionsResponse {
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = version
	keys := make([]int16, 0, len(apis))
	for k := range apis {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	for _, k := range keys {
		a := kmsg.NewApiVersionsResponseApiKey()
		a.ApiKey, a.MinVersion, a.MaxVersion = k, apis[k].min, apis[k].max
		resp.ApiKeys = append(resp.ApiKeys, a)
	}
	return resp
}
