package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestClusterInfo(t *testing.T) {
	p := startDev(t, "")
	cli := adminCLI(t, p)
	var info clusterInfo
	adminJSON(t, cli, &info, "cluster", "info")
	if info.ClusterID == "" || info.Controller != 0 || len(info.Brokers) != 1 {
		t.Fatalf("cluster info: %+v", info)
	}
	b := info.Brokers[0]
	if b.ID != 0 || b.Addr != p.kafkaAddr || b.HTTPAddr != p.httpAddr || len(b.LogDirs) != 1 {
		t.Fatalf("broker: %+v", b)
	}
	if d := b.LogDirs[0]; d.Dir != filepath.Join(p.dataDir, "log") || d.TotalBytes <= 0 || d.UsableBytes <= 0 || d.Error != "" {
		t.Fatalf("log dir: %+v", d)
	}
	text := mustAdmin(t, cli, "cluster", "info")
	for _, want := range []string{info.ClusterID, "0*", p.kafkaAddr, p.httpAddr} {
		if !strings.Contains(text, want) {
			t.Fatalf("cluster info does not print %q:\n%s", want, text)
		}
	}
}
