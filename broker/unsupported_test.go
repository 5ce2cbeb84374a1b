package broker_test

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
)

// A request for an API or version the broker does not serve is answered
// with UNSUPPORTED_VERSION where its response has a top-level error code,
// and the connection stays usable; otherwise the connection is closed (a
// KIP-896 removed version such as Produce v2).
func TestUnsupportedVersionsAreAnsweredWhereTheProtocolAllows(t *testing.T) {
	b := brokertest.Start(t)
	c := dial(t, b.Addr)
	var f kmsg.RequestFormatter
	tokens := kmsg.NewPtrDescribeDelegationTokenRequest()
	tokens.Version = 3
	if _, err := c.Write(f.AppendRequest(nil, tokens, 5)); err != nil {
		t.Fatal(err)
	}
	raw := readFrame(t, c)
	resp := kmsg.NewPtrDescribeDelegationTokenResponse()
	resp.Version = 3
	// Flexible response header: correlation id, then empty tags.
	if err := resp.ReadFrom(raw[5:]); err != nil {
		t.Fatal(err)
	}
	if resp.ErrorCode != kerr.UnsupportedVersion.Code {
		t.Fatalf("DescribeDelegationToken: error %v", kerr.ErrorForCode(resp.ErrorCode))
	}
	av := kmsg.NewPtrApiVersionsRequest()
	if _, err := c.Write(f.AppendRequest(nil, av, 6)); err != nil {
		t.Fatal(err)
	}
	readFrame(t, c)

	old := kmsg.NewPtrProduceRequest()
	old.Version, old.Acks = 2, 1
	c = dial(t, b.Addr)
	if _, err := c.Write(f.AppendRequest(nil, old, 7)); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c)
}
