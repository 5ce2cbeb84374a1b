package main

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestGroupCommands: list, describe (members, committed offsets, lag),
// seek (refused while the group has members; start, end, an offset, a
// timestamp) and delete, against shale dev.
func TestGroupCommands(t *testing.T) {
	p := startDev(t, "")
	cli := adminCLI(t, p)
	mustAdmin(t, cli, "topic", "create", "events", "-p", "2")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// 50 records in each partition, record i of a partition stamped
	// base+i seconds.
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	prod := p.client(kgo.DefaultProduceTopic("events"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for part := int32(0); part < 2; part++ {
		for i := 0; i < 50; i++ {
			r := &kgo.Record{Partition: part, Value: []byte(strconv.Itoa(i)), Timestamp: base.Add(time.Duration(i) * time.Second)}
			if err := prod.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The group commits 40 on partition 0 and 10 on partition 1.
	adm := kadm.NewClient(p.client())
	var offs kadm.Offsets
	offs.AddOffset("events", 0, 40, -1)
	offs.AddOffset("events", 1, 10, -1)
	if err := adm.CommitAllOffsets(ctx, "billing", offs); err != nil {
		t.Fatal(err)
	}

	var groups []listedGroup
	adminJSON(t, cli, &groups, "group", "list")
	if len(groups) != 1 || groups[0].Group != "billing" || groups[0].State != "Empty" {
		t.Fatalf("group list: %+v", groups)
	}
	var d describedGroup
	adminJSON(t, cli, &d, "group", "describe", "billing")
	if d.State != "Empty" || len(d.Members) != 0 || len(d.Partitions) != 2 || d.TotalLag != 50 {
		t.Fatalf("describe: %+v", d)
	}
	if p0 := d.Partitions[0]; p0.Committed != 40 || p0.End != 50 || p0.Lag != 10 {
		t.Fatalf("partition 0: %+v", p0)
	}
	if p1 := d.Partitions[1]; p1.Committed != 10 || p1.End != 50 || p1.Lag != 40 {
		t.Fatalf("partition 1: %+v", p1)
	}
	seek := func(to string) map[int32]int64 {
		t.Helper()
		var res []seekedPartition
		adminJSON(t, cli, &res, "group", "seek", "billing", "--topic", "events", "--to", to)
		got := map[int32]int64{}
		for _, r := range res {
			got[r.Partition] = r.Offset
		}
		var fetched []groupPartition
		var gd describedGroup
		adminJSON(t, cli, &gd, "group", "describe", "billing")
		fetched = gd.Partitions
		for _, f := range fetched {
			if got[f.Partition] != f.Committed {
				t.Fatalf("seek --to %s answered %v, the group has %+v", to, got, fetched)
			}
		}
		return got
	}
	if got := seek("start"); got[0] != 0 || got[1] != 0 {
		t.Fatalf("seek start: %v", got)
	}
	if got := seek("end"); got[0] != 50 || got[1] != 50 {
		t.Fatalf("seek end: %v", got)
	}
	if got := seek("20"); got[0] != 20 || got[1] != 20 {
		t.Fatalf("seek 20: %v", got)
	}
	if got := seek("5000"); got[0] != 50 || got[1] != 50 { // clamped to the end
		t.Fatalf("seek 5000: %v", got)
	}
	at := base.Add(30 * time.Second)
	if got := seek("@" + strconv.FormatInt(at.UnixMilli(), 10)); got[0] != 30 || got[1] != 30 {
		t.Fatalf("seek @%d: %v", at.UnixMilli(), got)
	}
	if got := seek("@" + base.Add(12*time.Second).UTC().Format(time.RFC3339)); got[0] != 12 || got[1] != 12 {
		t.Fatalf("seek @RFC3339: %v", got)
	}
	if got := seek("@" + strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10)); got[0] != 50 || got[1] != 50 {
		t.Fatalf("seek to a time after every record: %v", got)
	}
	_, err := cli("group", "seek", "billing", "--topic", "events", "--to", "soon")
	wantErr(t, err, `--to "soon"`)
	_, err = cli("group", "seek", "billing", "--topic", "nope", "--to", "start")
	wantErr(t, err, `topic "nope": UNKNOWN_TOPIC_OR_PARTITION`)
	_, err = cli("group", "seek", "billing", "--to", "start")
	wantErr(t, err, "--topic is required")

	// A member joins: describe shows it, seek and delete are refused.
	member := p.client(kgo.ConsumerGroup("billing"), kgo.ConsumeTopics("events"), kgo.ClientID("billing-worker"))
	waitUntil(t, "the member to be assigned both partitions", func() bool {
		pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		member.PollRecords(pctx, 1)
		pcancel()
		var gd describedGroup
		out, err := cli("group", "describe", "billing", "-o", "json")
		if err != nil || jsonUnmarshal(out, &gd) != nil {
			return false
		}
		d = gd
		return d.State == "Stable" && len(d.Members) == 1 && len(d.Members[0].Assignment["events"]) == 2
	})
	if m := d.Members[0]; m.ClientID != "billing-worker" || m.Host == "" || m.MemberID == "" {
		t.Fatalf("member: %+v", m)
	}
	for _, gp := range d.Partitions {
		if gp.ClientID != "billing-worker" {
			t.Fatalf("partition %d has no member: %+v", gp.Partition, gp)
		}
	}
	text := mustAdmin(t, cli, "group", "describe", "billing")
	for _, want := range []string{"Stable", "billing-worker", "events:0,1", "COMMITTED"} {
		if !strings.Contains(text, want) {
			t.Fatalf("group describe does not print %q:\n%s", want, text)
		}
	}
	_, err = cli("group", "seek", "billing", "--topic", "events", "--to", "start")
	wantErr(t, err, `group "billing" has 1 active member(s) (state Stable)`)
	_, err = cli("group", "delete", "billing")
	wantErr(t, err, `group "billing": NON_EMPTY_GROUP`)
	// The broker refuses such a commit too, as Kafka does: a commit from
	// outside the group is accepted only while the group is empty.
	if err := adm.CommitAllOffsets(ctx, "billing", offs); err == nil || !strings.Contains(err.Error(), "UNKNOWN_MEMBER_ID") {
		t.Fatalf("an offset commit from outside a group with a member: %v, want UNKNOWN_MEMBER_ID", err)
	}
	member.Close()

	waitUntil(t, "the group to be empty", func() bool {
		var gd describedGroup
		out, err := cli("group", "describe", "billing", "-o", "json")
		return err == nil && jsonUnmarshal(out, &gd) == nil && gd.State == "Empty"
	})
	var deleted []string
	adminJSON(t, cli, &deleted, "group", "delete", "billing")
	if len(deleted) != 1 || deleted[0] != "billing" {
		t.Fatalf("delete: %v", deleted)
	}
	_, err = cli("group", "describe", "billing")
	wantErr(t, err, `group "billing": GROUP_ID_NOT_FOUND`)
	_, err = cli("group", "delete", "billing")
	wantErr(t, err, `group "billing": GROUP_ID_NOT_FOUND`)
}
