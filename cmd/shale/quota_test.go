package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/shale-log/shale/broker/brokertest"
)

// TestQuotaCommands: alter sets and removes quotas of named and default
// entities, describe lists them with and without a filter, the broker's
// refusals are one line with INVALID_REQUEST, and --validate-only stores
// nothing.
func TestQuotaCommands(t *testing.T) {
	b := brokertest.Start(t)
	cli := func(args ...string) (string, error) {
		t.Helper()
		return runCLI(t, append(args, "--brokers", b.Addr, "--timeout", "20s")...)
	}
	describe := func(args ...string) []string {
		t.Helper()
		var ds []describedQuota
		adminJSON(t, cli, &ds, append([]string{"quota", "describe"}, args...)...)
		var got []string
		for _, d := range ds {
			var vs []string
			for _, k := range sortedKeys(d.Quotas) {
				vs = append(vs, k+"="+quotaValue(d.Quotas[k]))
			}
			got = append(got, quotaEntity(d.Entity)+" "+strings.Join(vs, " "))
		}
		return got
	}
	wantQuotas := func(got []string, want ...string) {
		t.Helper()
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("described %q, want %q", got, want)
		}
	}

	out := mustAdmin(t, cli, "quota", "alter", "--client-id", "app", "--set", "producer_byte_rate=1048576")
	if !strings.Contains(out, "client-id=app  producer_byte_rate  set to 1048576") {
		t.Fatalf("quota alter printed:\n%s", out)
	}
	mustAdmin(t, cli, "quota", "alter", "--user-default", "--set", "consumer_byte_rate=2097152")

	wantQuotas(describe(), "client-id=app producer_byte_rate=1048576", "user=<default> consumer_byte_rate=2097152")
	wantQuotas(describe("--client-id", "app"), "client-id=app producer_byte_rate=1048576")
	wantQuotas(describe("--user-default", "--strict"), "user=<default> consumer_byte_rate=2097152")
	wantQuotas(describe("--user", "alice"))
	if out := mustAdmin(t, cli, "quota", "describe"); !strings.Contains(out, "user=<default>  consumer_byte_rate=2097152") {
		t.Fatalf("quota describe printed:\n%s", out)
	}

	mustAdmin(t, cli, "quota", "alter", "--client-id", "app", "--remove", "producer_byte_rate")
	wantQuotas(describe(), "user=<default> consumer_byte_rate=2097152")

	// --validate-only: checked, not stored.
	out = mustAdmin(t, cli, "quota", "alter", "--user", "bob", "--client-id", "batch", "--set", "producer_byte_rate=4096", "--validate-only")
	if !strings.Contains(out, "valid, not applied") {
		t.Fatalf("quota alter --validate-only printed:\n%s", out)
	}
	wantQuotas(describe("--user", "bob"))

	// The broker's refusals, also from --validate-only.
	for _, args := range [][]string{
		{"--client-id", "app", "--set", "bogus=1"},
		{"--client-id", "app", "--set", "request_percentage=0"},
		{"--client-id", "app", "--set", "producer_byte_rate=1.5", "--validate-only"},
		{"--ip", "1.2.3.4", "--user", "alice", "--set", "producer_byte_rate=1"},
	} {
		_, err := cli(append([]string{"quota", "alter"}, args...)...)
		wantErr(t, err, "client quota entity", "INVALID_REQUEST: ")
	}
	wantQuotas(describe(), "user=<default> consumer_byte_rate=2097152")
	_, err := cli("quota", "describe", "--ip", "1.2.3.4", "--user", "alice")
	wantErr(t, err, "describing client quotas: INVALID_REQUEST: ")

	// The binary exits non-zero with the error on stderr.
	var stderr strings.Builder
	bin := exec.Command(shaleBin, "quota", "alter", "--client-id", "app", "--set", "bogus=1", "--brokers", b.Addr)
	bin.Stderr = &stderr
	if err := bin.Run(); err == nil || !strings.Contains(stderr.String(), `client quota entity "client-id=app": INVALID_REQUEST: `) {
		t.Fatalf("shale quota alter with an unknown key: %v, stderr %q", err, stderr.String())
	}

	// Argument errors, caught before the cluster is asked.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"alter", "--set", "producer_byte_rate=1"}, "no entity"},
		{[]string{"alter", "--user", "a"}, "nothing to change"},
		{[]string{"alter", "--user", "a", "--user-default", "--set", "producer_byte_rate=1"}, "--user and --user-default"},
		{[]string{"alter", "--user", "a", "--set", "producer_byte_rate=fast"}, "want a number"},
		{[]string{"alter", "--user", "a", "--set", "producer_byte_rate=1", "--remove", "producer_byte_rate"}, "both set and removed"},
		{[]string{"describe", "--client-id", "a", "--client-id-default"}, "--client-id and --client-id-default"},
	} {
		_, err := cli(append([]string{"quota"}, tc.args...)...)
		wantErr(t, err, tc.want)
	}
}
