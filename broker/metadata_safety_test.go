package broker_test

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shale-log/shale/broker/brokertest"
)

// keptTopic starts a broker with a one-partition topic holding n records
// and returns it with the topic's log directory. Every client the helper
// opens is closed, so that restarts are quick.
func keptTopic(t *testing.T, topic string, n int) (*brokertest.Broker, string) {
	t.Helper()
	b := brokertest.Start(t)
	cl := b.Client(kgo.DefaultProduceTopic(topic))
	createTopic(t, kadm.NewClient(cl), topic, 1, nil)
	for i := 0; i < n; i++ {
		cl.Produce(context.Background(), &kgo.Record{Value: []byte(strconv.Itoa(i))}, nil)
	}
	if err := cl.Flush(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	return b, filepath.Join(b.Dir, "log", topic+"-0")
}

func etcdValue(t *testing.T, cli *clientv3.Client, key string) string {
	t.Helper()
	resp, err := cli.Get(testCtx(t), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v (%d keys)", key, err, len(resp.Kvs))
	}
	return string(resp.Kvs[0].Value)
}

func etcdPut(t *testing.T, cli *clientv3.Client, key, val string) {
	t.Helper()
	if _, err := cli.Put(testCtx(t), key, val); err != nil {
		t.Fatal(err)
	}
}

// partitionError is the Metadata error of topic's partition 0 (or of the
// topic when it has none).
func partitionError(t *testing.T, b *brokertest.Broker, topic string) error {
	t.Helper()
	cl := b.Client()
	defer cl.Close()
	md, err := kadm.NewClient(cl).Metadata(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	td := md.Topics[topic]
	if td.Err != nil {
		return td.Err
	}
	if p, ok := td.Partitions[0]; ok {
		return p.Err
	}
	return errors.New("no partition 0")
}

func waitMetadataError(t *testing.T, b *brokertest.Broker, topic string, want error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := partitionError(t, b, topic)
		if errors.Is(err, want) || (want == nil && err == nil) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metadata of %s: %v, want %v", topic, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustExist(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "00000000000000000000.log")); err != nil {
		t.Fatalf("the log in %s is gone: %v", dir, err)
	}
}

// A topic record that cannot be decoded takes the topic offline (LEADER_NOT_
// AVAILABLE), across a restart, without deleting its log; once the record
// is right again the records are all there.
func TestUnreadableTopicRecordKeepsData(t *testing.T) {
	b, dir := keptTopic(t, "precious", 300)
	key := "/shale/topics/precious"
	good := etcdValue(t, b.Etcd(), key)
	etcdPut(t, b.Etcd(), key, "{garbage")
	waitMetadataError(t, b, "precious", kerr.LeaderNotAvailable)
	mustExist(t, dir)

	b.Restart()
	mustExist(t, dir)
	waitMetadataError(t, b, "precious", kerr.LeaderNotAvailable)

	etcdPut(t, b.Etcd(), key, good)
	waitMetadataError(t, b, "precious", nil)
	if got := consumeN(t, b, "precious", 300); len(got) != 300 {
		t.Fatalf("%d records after the record was repaired", len(got))
	}
}

// A partition record that cannot be decoded, or whose replicas name a
// broker that does not exist, keeps the partition's log; it is served again
// once the record is right.
func TestBadPartitionRecordKeepsData(t *testing.T) {
	for name, bad := range map[string]string{
		"unreadable":     "{garbage",
		"unknown broker": `{"topic":"precious","topicId":"%ID%","index":0,"replicas":[99],"leader":99,"leaderEpoch":1,"isr":[99],"partitionEpoch":1}`,
	} {
		t.Run(name, func(t *testing.T) {
			b, dir := keptTopic(t, "precious", 100)
			key := "/shale/partitions/precious/0000000000"
			good := etcdValue(t, b.Etcd(), key)
			lcl := b.Client()
			td, err := kadm.NewClient(lcl).ListTopics(testCtx(t), "precious")
			lcl.Close()
			if err != nil {
				t.Fatal(err)
			}
			id := td["precious"].ID
			etcdPut(t, b.Etcd(), key, replaceAll(bad, "%ID%", idString(id)))
			waitMetadataError(t, b, "precious", kerr.LeaderNotAvailable)
			mustExist(t, dir)
			b.Restart()
			mustExist(t, dir)
			etcdPut(t, b.Etcd(), key, good)
			waitMetadataError(t, b, "precious", nil)
			if got := consumeN(t, b, "precious", 100); len(got) != 100 {
				t.Fatalf("%d records after the record was repaired", len(got))
			}
		})
	}
}

// Keys removed without a recorded deletion (no tombstone) leave the log in
// place, at once and at the next start-up; DeleteTopics records the
// deletion and the log goes.
func TestOnlyARecordedDeletionRemovesALog(t *testing.T) {
	b, dir := keptTopic(t, "precious", 10)
	cli := b.Etcd()
	if _, err := cli.Delete(testCtx(t), "/shale/topics/precious"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(testCtx(t), "/shale/partitions/precious/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	waitMetadataError(t, b, "precious", kerr.UnknownTopicOrPartition)
	mustExist(t, dir)
	b.Restart()
	mustExist(t, dir)

	b2, dir2 := keptTopic(t, "doomed", 10)
	if _, err := b2.Admin().DeleteTopic(testCtx(t), "doomed"); err != nil {
		t.Fatal(err)
	}
	resp, err := b2.Etcd().Get(testCtx(t), "/shale/deleted-topics/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("tombstones: %v %d", err, len(resp.Kvs))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(dir2); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still there after DeleteTopics", dir2)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func replaceAll(s, old, new string) string { return strings.ReplaceAll(s, old, new) }

func idString(id [16]byte) string { return base64.RawURLEncoding.EncodeToString(id[:]) }
