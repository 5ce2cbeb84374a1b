package broker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// TestACLTransactions: a transactional producer needs WRITE on its
// transactional id (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED) and on the
// topics it adds; an exactly-once copy needs READ on its group too. Given
// those, it commits.
func TestACLTransactions(t *testing.T) {
	b := brokertest.Start(t, aclOpts, func(c *broker.Config) {
		c.OffsetsTopicPartitions = 2
		c.TransactionTopicPartitions = 2
	})
	adm := b.Admin()
	ctx, cancel := context.WithTimeout(testCtx(t), time.Minute)
	defer cancel()
	addUser(t, adm, "alice", "alice-pw")
	dataTopics(t, adm, "tx-out", "tx-other")
	lit := kadm.ACLPatternLiteral

	// No WRITE on the transactional id: InitProducerId is refused.
	noID := userClient(t, b, "alice", "alice-pw", kgo.TransactionalID("alice-tx"))
	err := noID.BeginTransaction() // the client asks for its producer id at once
	if err == nil {
		err = noID.ProduceSync(ctx, &kgo.Record{Topic: "tx-out", Value: []byte("no")}).FirstErr()
	}
	if !errors.Is(err, kerr.TransactionalIDAuthorizationFailed) {
		t.Fatalf("a transaction without WRITE on its id: %v, want TRANSACTIONAL_ID_AUTHORIZATION_FAILED", err)
	}

	grant(t, adm, kadm.NewACLs().TransactionalIDs("alice-tx").ResourcePatternType(lit).Allow("User:alice").AllowHosts().Operations(kadm.OpWrite))
	grant(t, adm, kadm.NewACLs().Topics("tx-out").ResourcePatternType(lit).Allow("User:alice").AllowHosts().Operations(kadm.OpWrite, kadm.OpRead))

	// WRITE on the id and on tx-out, not on tx-other: AddPartitionsToTxn
	// refuses tx-other.
	p := userClient(t, b, "alice", "alice-pw", kgo.TransactionalID("alice-tx"))
	if err := p.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	err = p.ProduceSync(ctx, &kgo.Record{Topic: "tx-other", Value: []byte("no")}).FirstErr()
	if !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("adding a topic without WRITE to the transaction: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	if err := p.EndTransaction(ctx, kgo.TryAbort); err != nil && !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Logf("aborting after the refusal: %v", err)
	}

	// Given those, a transaction commits.
	q := userClient(t, b, "alice", "alice-pw", kgo.TransactionalID("alice-tx"))
	transact(t, q, "tx-out", true, "yes")

	// Offsets in a transaction need READ on the group.
	grant(t, adm, kadm.NewACLs().Groups("alice-group").ResourcePatternType(lit).Allow("User:alice").AllowHosts().Operations(kadm.OpRead))
	s, err := kgo.NewGroupTransactSession(kgo.SeedBrokers(b.Addr),
		kgo.SASL(scram.Auth{User: "alice", Pass: "alice-pw"}.AsSha256Mechanism()), kgo.TransactionalID("alice-tx"), kgo.ConsumerGroup("alice-group"), kgo.ConsumeTopics("tx-out"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for {
		fs := s.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("the exactly-once session read nothing")
		}
		if len(fs.Records()) == 0 {
			continue
		}
		if err := s.Begin(); err != nil {
			t.Fatal(err)
		}
		if committed, err := s.End(ctx, kgo.TryCommit); err != nil || !committed {
			t.Fatalf("committing the group's offsets in a transaction: %v (committed %v)", err, committed)
		}
		break
	}
	// The markers follow the commit's answer: the offsets become the
	// group's a moment later.
	brokertest.WaitFor(t, 10*time.Second, "alice-group's offsets committed", func() (bool, string) {
		offs, err := adm.FetchOffsets(ctx, "alice-group")
		if err != nil {
			return false, err.Error()
		}
		var sum int64
		offs.Each(func(o kadm.OffsetResponse) { sum += o.At })
		return sum == 1, fmt.Sprintf("offsets %v", offs) // the record's offset 0, plus one
	})
}
