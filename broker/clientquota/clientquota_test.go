package clientquota

import (
	"testing"
	"time"

	"github.com/shale-log/shale/metadata"
)

func name(n string) metadata.QuotaName { return metadata.QuotaName{Set: true, Name: n} }

var def = metadata.QuotaName{Set: true, Default: true}

// TestResolveFollowsKafkasPrecedence: of the eight entities that can set a
// client's quota, the most specific one that sets the key wins, and the
// sensor is kept per the names the winning entity has.
func TestResolveFollowsKafkasPrecedence(t *testing.T) {
	order := []metadata.QuotaEntity{
		{User: name("alice"), ClientID: name("app")},
		{User: name("alice"), ClientID: def},
		{User: name("alice")},
		{User: def, ClientID: name("app")},
		{User: def, ClientID: def},
		{User: def},
		{ClientID: name("app")},
		{ClientID: def},
	}
	sensors := []Sensor{
		{User: "alice", ClientID: "app", HasUser: true, HasClientID: true},
		{User: "alice", ClientID: "app", HasUser: true, HasClientID: true},
		{User: "alice", HasUser: true},
		{User: "alice", ClientID: "app", HasUser: true, HasClientID: true},
		{User: "alice", ClientID: "app", HasUser: true, HasClientID: true},
		{User: "alice", HasUser: true},
		{ClientID: "app", HasClientID: true},
		{ClientID: "app", HasClientID: true},
	}
	quotas := map[metadata.QuotaEntity]map[string]float64{
		{User: name("bob")}:   {ProducerByteRate: 1}, // another user's
		{ClientID: name("x")}: {ProducerByteRate: 2},
	}
	for i := len(order) - 1; i >= 0; i-- {
		quotas[order[i]] = map[string]float64{ProducerByteRate: float64(100 + i), ConsumerByteRate: 7}
		bound, s, ok := Resolve(quotas, "alice", "app", ProducerByteRate)
		if !ok || bound != float64(100+i) || s != sensors[i] {
			t.Fatalf("with entities %d..7: bound %v sensor %+v %v, want %d %+v", i, bound, s, ok, 100+i, sensors[i])
		}
	}
	if _, _, ok := Resolve(quotas, "carol", "other", ConsumerByteRate); !ok {
		t.Fatal("the default user's quota does not apply to another user")
	}
	if _, _, ok := Resolve(map[metadata.QuotaEntity]map[string]float64{{User: name("bob")}: {ProducerByteRate: 1}}, "alice", "app", ProducerByteRate); ok {
		t.Fatal("another user's quota applies")
	}
}

// TestRateAllowsTheWindowsBurstThenThrottles: a new client is measured over
// ten windows, so a burst of ten windows' worth passes; past it the
// throttle is what brings the rate back to the bound, and waiting it out
// does.
func TestRateAllowsTheWindowsBurstThenThrottles(t *testing.T) {
	r := NewRate(11, time.Second)
	now := time.Unix(1000, 0)
	r.Record(now, 1000) // 1000 B over at least 10 s: 100 B/s
	if d := r.Throttle(now, 100); d != 0 {
		t.Fatalf("throttled %v at the bound", d)
	}
	r.Record(now, 1000) // 200 B/s: twice the bound
	d := r.Throttle(now, 100)
	if d != 10*time.Second {
		t.Fatalf("throttle %v, want 10s (rate twice the bound over 10 s)", d)
	}
	// A client measured for ten windows already: waiting out the
	// throttle brings its rate back to the bound.
	steady := NewRate(11, time.Second)
	for i := range 10 {
		steady.Record(now.Add(time.Duration(i)*time.Second), 100)
	}
	at := now.Add(10 * time.Second)
	steady.Record(at, 1000)
	if d := steady.Throttle(at, 100); d != 10*time.Second {
		t.Fatalf("steady client's throttle %v, want 10s", d)
	} else if got := steady.PerSecond(at.Add(d)); got > 100.001 {
		t.Fatalf("after the throttle the rate is %v, above the bound", got)
	}
	r.Record(now, 1e9)
	if d := r.Throttle(now, 100); d != 11*time.Second {
		t.Fatalf("throttle %v, want it capped at the samples' 11 s", d)
	}
	if got := r.PerSecond(now.Add(11 * time.Second)); got != 0 {
		t.Fatalf("samples older than 11 windows still count: %v", got)
	}
	r.Record(now.Add(20*time.Second), -5) // taken back: never below zero in sum terms here
	if r.Throttle(now.Add(20*time.Second), 100) != 0 {
		t.Fatal("a rate taken back throttles")
	}
}

func TestEntityAndValueChecks(t *testing.T) {
	s := func(v string) *string { return &v }
	for _, bad := range [][]Component{
		nil,
		{{Type: "users", Name: s("a")}},
		{{Type: TypeUser, Name: s("a")}, {Type: TypeUser}},
		{{Type: TypeIP, Name: s("10.0.0.1")}, {Type: TypeUser}},
		{{Type: TypeIP, Name: s("not-an-ip")}},
	} {
		if e, err := Entity(bad); err == nil {
			t.Errorf("%v accepted as %+v", bad, e)
		}
	}
	e, err := Entity([]Component{{Type: TypeClientID, Name: s("app")}, {Type: TypeUser}})
	if err != nil || e != (metadata.QuotaEntity{User: def, ClientID: name("app")}) {
		t.Fatalf("entity %+v, %v", e, err)
	}
	if err := CheckValue(e, ProducerByteRate, 1024); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key string
		v   float64
	}{{ProducerByteRate, 0}, {ConsumerByteRate, 1.5}, {RequestPercentage, 0}, {ConnectionCreationRate, 5}, {"bogus", 1}} {
		if err := CheckValue(e, c.key, c.v); err == nil {
			t.Errorf("%s=%v accepted", c.key, c.v)
		}
	}
	if err := CheckValue(e, RequestPercentage, 50.5); err != nil {
		t.Errorf("request_percentage=50.5: %v", err)
	}
	ip, _ := Entity([]Component{{Type: TypeIP}})
	if err := CheckValue(ip, ProducerByteRate, 10); err == nil {
		t.Error("producer_byte_rate accepted on an ip entity")
	}
	if err := CheckValue(ip, RequestPercentage, 10); err == nil {
		t.Error("request_percentage accepted on an ip entity")
	}
	if err := CheckValue(ip, ConnectionCreationRate, 10); err != nil {
		t.Errorf("connection_creation_rate=10 on an ip entity: %v", err)
	}
	for _, v := range []float64{0, 1.5, 1e12} {
		if err := CheckValue(ip, ConnectionCreationRate, v); err == nil {
			t.Errorf("connection_creation_rate=%v accepted", v)
		}
	}
}

func TestFilters(t *testing.T) {
	s := func(v string) *string { return &v }
	alice := metadata.QuotaEntity{User: name("alice")}
	aliceApp := metadata.QuotaEntity{User: name("alice"), ClientID: name("app")}
	defUser := metadata.QuotaEntity{User: def}
	for _, c := range []struct {
		comps  []FilterComponent
		strict bool
		e      metadata.QuotaEntity
		want   bool
	}{
		{nil, false, aliceApp, true},
		{nil, true, aliceApp, false},
		{[]FilterComponent{{Type: TypeUser, Match: MatchExact, Name: s("alice")}}, false, aliceApp, true},
		{[]FilterComponent{{Type: TypeUser, Match: MatchExact, Name: s("alice")}}, true, aliceApp, false},
		{[]FilterComponent{{Type: TypeUser, Match: MatchExact, Name: s("alice")}}, true, alice, true},
		{[]FilterComponent{{Type: TypeUser, Match: MatchDefault}}, false, defUser, true},
		{[]FilterComponent{{Type: TypeUser, Match: MatchDefault}}, false, alice, false},
		{[]FilterComponent{{Type: TypeUser, Match: MatchAny}}, false, defUser, false},
		{[]FilterComponent{{Type: TypeUser, Match: MatchAny}}, false, alice, true},
		{[]FilterComponent{{Type: TypeClientID, Match: MatchAny}}, false, alice, false},
	} {
		if err := CheckFilter(c.comps); err != nil {
			t.Fatal(err)
		}
		if got := Matches(c.e, c.comps, c.strict); got != c.want {
			t.Errorf("%+v strict %v on %+v: %v, want %v", c.comps, c.strict, c.e, got, c.want)
		}
	}
	for _, bad := range [][]FilterComponent{
		{{Type: "group", Match: MatchAny}},
		{{Type: TypeUser, Match: MatchAny}, {Type: TypeUser, Match: MatchDefault}},
		{{Type: TypeUser, Match: MatchExact}},
		{{Type: TypeIP, Match: MatchAny}, {Type: TypeClientID, Match: MatchAny}},
	} {
		if CheckFilter(bad) == nil {
			t.Errorf("filter %+v accepted", bad)
		}
	}
}

// TestBucketBurstsThenThrottles: a bucket starts full (quota × samples ×
// window), a take past it leaves the client owing what quota repays in
// the throttle time, and time refills it, never past the burst.
func TestBucketBurstsThenThrottles(t *testing.T) {
	var b Bucket
	t0 := time.Unix(1000, 0)
	const quota, burst = 2.0, 22.0 // 2 partitions/s, 11 samples of 1 s
	if d := b.Throttle(t0, quota, burst); d != 0 {
		t.Fatalf("a new bucket throttles %v", d)
	}
	b.Take(t0, 22, quota, burst)
	if d := b.Throttle(t0, quota, burst); d != 0 {
		t.Fatalf("the burst spent to zero throttles %v", d)
	}
	b.Take(t0, 10, quota, burst)
	if d := b.Throttle(t0, quota, burst); d != 5*time.Second {
		t.Fatalf("10 past the burst at 2/s: throttle %v, want 5s", d)
	}
	if d := b.Throttle(t0.Add(3*time.Second), quota, burst); d != 2*time.Second {
		t.Fatalf("3 s later: throttle %v, want 2s", d)
	}
	if d := b.Throttle(t0.Add(time.Hour), quota, burst); d != 0 || b.tokens != burst {
		t.Fatalf("an hour later: throttle %v, tokens %v; want 0 and the burst", d, b.tokens)
	}
	if d := b.Throttle(t0.Add(time.Hour), 0, burst); d != 0 {
		t.Fatalf("no quota: throttle %v", d)
	}
}
