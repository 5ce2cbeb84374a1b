package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// lostAnswerEtcd is an etcd client whose first commit writing key applies
// and loses its answer: the caller gets a lost connection at once. Before
// that answer, after (when set) runs: another writer's change landing
// between the write and its settle.
type lostAnswerEtcd struct {
	clientv3.KV
	key   string
	after func()

	mu   sync.Mutex
	lost bool
}

func (le *lostAnswerEtcd) Txn(ctx context.Context) clientv3.Txn {
	return &lostAnswerTxn{Txn: le.KV.Txn(ctx), le: le}
}

type lostAnswerTxn struct {
	clientv3.Txn
	le     *lostAnswerEtcd
	writes bool
}

func (t *lostAnswerTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t *lostAnswerTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }
func (t *lostAnswerTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	for _, op := range ops {
		t.writes = t.writes || (op.IsPut() || op.IsDelete()) && string(op.KeyBytes()) == t.le.key
	}
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *lostAnswerTxn) Commit() (*clientv3.TxnResponse, error) {
	t.le.mu.Lock()
	lose := t.writes && !t.le.lost
	t.le.lost = t.le.lost || lose
	t.le.mu.Unlock()
	if !lose {
		return t.Txn.Commit()
	}
	resp, err := t.Txn.Commit()
	if err != nil || !resp.Succeeded {
		return resp, err
	}
	if t.le.after != nil {
		t.le.after()
	}
	return nil, status.Error(codes.Unavailable, "error reading from server: connection reset")
}

// configTarget is one kind of configs a config change writes: a topic's,
// or a broker's.
type configTarget struct {
	name   string
	key    func(s *Store) string
	update func(ctx context.Context, s *Store, mutate func(map[string]string) (map[string]string, error)) (int64, error)
	read   func(t *testing.T, s *Store) map[string]string
}

var configTargets = []configTarget{
	{
		name: "topic",
		key:  func(s *Store) string { return s.topicKey("configs") },
		update: func(ctx context.Context, s *Store, mutate func(map[string]string) (map[string]string, error)) (int64, error) {
			return s.UpdateTopicConfigs(ctx, "configs", mutate)
		},
		read: func(t *testing.T, s *Store) map[string]string {
			t.Helper()
			got, err := s.topic(ctxT(t), "configs")
			if err != nil {
				t.Fatal(err)
			}
			return got.Configs
		},
	},
	{
		name: "broker",
		key:  func(s *Store) string { return s.brokerConfigsKey(1) },
		update: func(ctx context.Context, s *Store, mutate func(map[string]string) (map[string]string, error)) (int64, error) {
			return s.UpdateBrokerConfigs(ctx, 1, mutate)
		},
		read: func(t *testing.T, s *Store) map[string]string {
			t.Helper()
			resp, err := s.cli.Get(ctxT(t), s.brokerConfigsKey(1))
			if err != nil || len(resp.Kvs) == 0 {
				t.Fatalf("broker configs: %v, %v", resp, err)
			}
			var m map[string]string
			if err := json.Unmarshal(resp.Kvs[0].Value, &m); err != nil {
				t.Fatal(err)
			}
			return m
		},
	},
}

// set is a mutate that sets the configs to m.
func set(m map[string]string) func(map[string]string) (map[string]string, error) {
	return func(map[string]string) (map[string]string, error) { return maps.Clone(m), nil }
}

// A config change (AlterConfigs, IncrementalAlterConfigs; a topic's or a
// broker's) whose write's outcome is unknown is settled, not written
// again over whatever is read next:
//   - held by etcd past the deadline: fenced, and the caller told it did
//     not land (a deadline error without ErrIndeterminate); the held
//     write, applied after that answer, fails its guard;
//   - applied just before the fence: found landed;
//   - landed with its answer lost: found landed, not written again;
//   - landed and then changed by another writer before the settle
//     re-reads: ErrIndeterminate (REQUEST_TIMED_OUT at the broker), and the
//     other writer's change stays. Before, the change was applied again
//     over it, undoing it, and answered as a success.
func TestConfigChangeOfUnknownOutcomeIsSettled(t *testing.T) {
	e := startStockEtcd(t)
	before := map[string]string{"retention.ms": "1000"}
	ours := map[string]string{"retention.ms": "2000"}
	theirs := map[string]string{"retention.ms": "3000"}
	for _, target := range configTargets {
		for _, tc := range []string{"held", "lands-before-fence", "landed", "landed-then-changed"} {
			t.Run(target.name+"/"+tc, func(t *testing.T) {
				prefix := "/" + target.name + "-" + tc + "/"
				direct := NewStore(e.Client(), prefix)
				topic, parts := testTopic("configs", 1)
				topic.Configs = before
				if _, err := direct.CreateTopic(ctxT(t), topic, parts); err != nil {
					t.Fatal(err)
				}
				if _, err := direct.UpdateBrokerConfigs(ctxT(t), 1, set(before)); err != nil {
					t.Fatal(err)
				}
				cli := ownClient(t, e)
				s := NewStore(cli, prefix)
				ctx, cancel := context.WithTimeout(context.Background(), deadlineTimeout)
				defer cancel()
				var he *holdingEtcd
				switch tc {
				case "held", "lands-before-fence":
					he = &holdingEtcd{KV: cli.KV, key: target.key(s), landsFirst: tc == "lands-before-fence"}
					cli.KV = he
				case "landed":
					cli.KV = &lostAnswerEtcd{KV: cli.KV, key: target.key(s)}
				case "landed-then-changed":
					cli.KV = &lostAnswerEtcd{KV: cli.KV, key: target.key(s), after: func() {
						if _, err := target.update(ctxT(t), direct, set(theirs)); err != nil {
							t.Error(err)
						}
					}}
				}
				rev, err := target.update(ctx, s, set(ours))
				want := ours
				switch tc {
				case "held":
					if err == nil || errors.Is(err, ErrIndeterminate) || !errors.Is(err, context.DeadlineExceeded) {
						t.Fatalf("a change held past its deadline returned %v, want a deadline error saying it did not land", err)
					}
					resp, err := he.release()
					if err != nil {
						t.Fatal(err)
					}
					if resp.Succeeded {
						t.Fatal("the held write applied after the caller was told it did not land")
					}
					want = before
				case "lands-before-fence", "landed":
					if err != nil || rev == 0 {
						t.Fatalf("a change that landed: revision %d, %v", rev, err)
					}
				case "landed-then-changed":
					if !errors.Is(err, ErrIndeterminate) {
						t.Fatalf("a change that landed and was changed again: revision %d, %v; want ErrIndeterminate", rev, err)
					}
					want = theirs
				}
				if got := target.read(t, direct); !maps.Equal(got, want) {
					t.Fatalf("configs %v, want %v", got, want)
				}
			})
		}
	}
}

// A broker's first configs (one broker's, or the cluster-wide default's;
// no record yet) whose write's outcome is unknown are settled like a
// change of an existing record: the settle fences the missing record by
// creating it as noBrokerConfigs (no configs).
//   - held by etcd past the deadline: fenced, and the caller told it did
//     not land (a deadline error without ErrIndeterminate); the configs
//     are then emptied (which keeps the record), and the held write,
//     applied after that, still fails its guard. Before, the answer was
//     ErrIndeterminate (REQUEST_TIMED_OUT at the broker).
//   - applied just before the fence: found landed;
//   - landed with its answer lost: found landed.
func TestFirstBrokerConfigsOfUnknownOutcomeAreSettled(t *testing.T) {
	e := startStockEtcd(t)
	ours := map[string]string{"leader.replication.throttled.rate": "1000"}
	for _, id := range []int32{1, DefaultBrokerConfigs} {
		for _, tc := range []string{"held", "lands-before-fence", "landed"} {
			t.Run(fmt.Sprintf("%d/%s", id, tc), func(t *testing.T) {
				prefix := fmt.Sprintf("/first-%d-%s/", id, tc)
				direct := NewStore(e.Client(), prefix)
				key := direct.brokerConfigsKey(id)
				cli := ownClient(t, e)
				var he *holdingEtcd
				if tc == "landed" {
					cli.KV = &lostAnswerEtcd{KV: cli.KV, key: key}
				} else {
					he = &holdingEtcd{KV: cli.KV, key: key, landsFirst: tc == "lands-before-fence"}
					cli.KV = he
				}
				ctx, cancel := context.WithTimeout(context.Background(), deadlineTimeout)
				defer cancel()
				rev, err := NewStore(cli, prefix).UpdateBrokerConfigs(ctx, id, set(ours))
				want := ours
				if tc == "held" {
					if err == nil || errors.Is(err, ErrIndeterminate) || !errors.Is(err, context.DeadlineExceeded) {
						t.Fatalf("first configs held past their deadline returned %v, want a deadline error saying they did not land", err)
					}
					if _, err := direct.UpdateBrokerConfigs(ctxT(t), id, set(nil)); err != nil {
						t.Fatal(err)
					}
					resp, err := he.release()
					if err != nil {
						t.Fatal(err)
					}
					if resp.Succeeded {
						t.Fatal("the held first write applied after the caller was told it did not land")
					}
					want = nil
				} else if err != nil || rev == 0 {
					t.Fatalf("first configs that landed: revision %d, %v", rev, err)
				}
				resp, err := direct.cli.Get(ctxT(t), key)
				if err != nil || len(resp.Kvs) != 1 {
					t.Fatalf("broker configs record: %v, %v", resp, err)
				}
				var got map[string]string
				if err := json.Unmarshal(resp.Kvs[0].Value, &got); err != nil {
					t.Fatal(err)
				}
				if !maps.Equal(got, want) {
					t.Fatalf("configs %v, want %v", got, want)
				}
				cache := newTestCache(t, ctxT(t), direct)
				if got := cache.Snapshot().BrokerConfigs[id]; !maps.Equal(got, want) {
					t.Fatalf("configs in a cache %v, want %v", got, want)
				}
			})
		}
	}
}
