package broker_test

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// aclOpts is a broker requiring SASL (saslOpts) that enforces ACLs: its
// bootstrap user admin is a super user, so b.Admin() may do anything.
func aclOpts(c *broker.Config) {
	saslOpts(c)
	c.ACLs = true
}

// addUser gives user a SCRAM-SHA-256 credential for password pw.
func addUser(t *testing.T, adm *kadm.Client, user, pw string) {
	t.Helper()
	res, err := adm.AlterUserSCRAMs(testCtx(t), nil, []kadm.UpsertSCRAM{
		{User: user, Mechanism: kadm.ScramSha256, Iterations: 4096, Password: pw},
	})
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatalf("adding user %s: %v", user, err)
	}
}

// userClient is a client of b authenticating as user by SCRAM-SHA-256.
func userClient(t *testing.T, b *brokertest.Broker, user, pw string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	return clientAs(t, scram.Auth{User: user, Pass: pw}.AsSha256Mechanism(), []string{b.Addr}, opts...)
}

// grant creates the ACLs acls builds, failing the test on any error.
func grant(t *testing.T, adm *kadm.Client, acls *kadm.ACLBuilder) {
	t.Helper()
	res, err := adm.CreateACLs(testCtx(t), acls)
	if err != nil {
		t.Fatalf("creating ACLs: %v", err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("creating ACL %s %s %s on %s %s: %v", r.Principal, r.Permission, r.Operation, r.Type, r.Name, r.Err)
		}
	}
}
