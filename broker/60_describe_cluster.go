package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.DescribeCluster, 0, 2, handleDescribeCluster)
}

// Endpoint types of DescribeCluster v1+.
const (
	endpointBrokers     = 1
	endpointControllers = 2
)

func handleDescribeCluster(b *Broker, r *request, req *kmsg.DescribeClusterRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeClusterResponse)
	resp.EndpointType = endpointBrokers
	resp.ClusterAuthorizedOperations = noAuthorizedOperations
	if req.Version >= 1 && req.EndpointType != endpointBrokers {
		resp.ErrorCode = kerr.UnsupportedEndpointType.Code
		resp.ErrorMessage = kmsg.StringPtr("controllers are etcd, not Kafka endpoints; ask for brokers")
		return resp
	}
	view := b.meta.snapshot()
	resp.ClusterID = view.clusterID
	resp.ControllerID = view.controllerID
	for _, br := range view.brokers {
		mb := kmsg.NewDescribeClusterResponseBroker()
		mb.NodeID, mb.Host, mb.Port, mb.Rack = br.id, br.host, br.port, br.rack
		resp.Brokers = append(resp.Brokers, mb)
	}
	return resp
}
