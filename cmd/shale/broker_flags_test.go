package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// The connection limits, the replica selector and the remote fetch wait
// reach the broker from flags or SHALE_* variables, as DescribeConfigs of
// the broker shows.
func TestConnectionLimitAndReplicaSelectorFlags(t *testing.T) {
	p := startDev(t, "", "SHALE_MAX_CONNECTIONS=50", "SHALE_MAX_CONNECTIONS_PER_IP=20", "SHALE_REPLICA_SELECTOR=leader", "SHALE_REMOTE_FETCH_MAX_WAIT=250ms")
	adm := kadm.NewClient(p.client())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rcs, err := adm.DescribeBrokerConfigs(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On("0", nil)
	if err != nil || rc.Err != nil {
		t.Fatalf("describe broker 0: %v %v", err, rc.Err)
	}
	got := map[string]string{}
	for _, c := range rc.Configs {
		got[c.Key] = c.MaybeValue()
	}
	for k, want := range map[string]string{"max.connections": "50", "max.connections.per.ip": "20", "replica.selector.class": "",
		"remote.log.storage.system.enable": "true", "remote.fetch.max.wait.ms": "250"} {
		if v, ok := got[k]; !ok || v != want {
			t.Errorf("%s = %q (present %v), want %q", k, v, ok, want)
		}
	}
}

func TestBrokerFlagsRefuseBadValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
		subs []string // default: dev and broker
	}{
		{[]string{"--replica-selector", "nearest"}, "--replica-selector \"nearest\"", nil},
		{[]string{"--max-connections", "0"}, "--max-connections 0", nil},
		{[]string{"--max-connections-per-ip", "-1"}, "--max-connections-per-ip -1", nil},
		{[]string{"--remote-fetch-max-wait", "0s"}, "--remote-fetch-max-wait 0s", nil},
		{[]string{"--unclean-recovery-wait", "-1s"}, "--unclean-recovery-wait -1s", []string{"broker"}},
	} {
		subs := tc.subs
		if subs == nil {
			subs = []string{"dev", "broker"}
		}
		for _, sub := range subs {
			args := append([]string{sub, "--data-dir", t.TempDir(), "--kafka-addr", freeAddr(t), "--http-addr", freeAddr(t)}, tc.args...)
			if sub == "broker" {
				args = append(args, "--id", "0")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			out, err := exec.CommandContext(ctx, shaleBin, args...).CombinedOutput()
			cancel()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("shale %s: err %v, output %q, want it to say %s", strings.Join(args, " "), err, out, tc.want)
			}
		}
	}
}
