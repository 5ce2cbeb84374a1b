package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

func init() {
	handler(kmsg.DescribeCluster, 0, 2, handleDescribeCluster)
}

// Endpoint types of DescribeCluster v1+.
const (
	endpointBrokers     = 1
	endpointControllers = 2
)

// handleDescribeCluster asks for no ACL (as Kafka's).
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
	if req.IncludeClusterAuthorizedOperations {
		resp.ClusterAuthorizedOperations = r.clusterAuthorizedOperations()
	}
	return resp
}

// clusterAuthorizedOperations is the cluster's authorized-operations field
// for the client (DescribeCluster, Metadata v8-v10): none unless it may
// DESCRIBE the cluster, as Kafka answers.
func (r *request) clusterAuthorizedOperations() int32 {
	ops := r.authorizedOperations(acl.Cluster, acl.ClusterName, clusterOperations)
	if ops&(1<<acl.Describe) == 0 {
		return 0
	}
	return ops
}
