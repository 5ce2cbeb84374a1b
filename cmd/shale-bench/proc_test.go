package main

import (
	"os"
	"testing"
	"time"
)

// TestProcessCPUCountsThisProcess spins until /proc says this process used
// 50ms of CPU: on a busy machine that takes longer, but it must come.
func TestProcessCPUCountsThisProcess(t *testing.T) {
	m := startCPU(os.Getpid())
	deadline := time.Now().Add(20 * time.Second)
	for m.stop()[0] < 50*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("20s of spinning used %v of CPU", m.stop()[0])
		}
		for start := time.Now(); time.Since(start) < 10*time.Millisecond; {
		}
	}
	if used, sys := m.stop()[0], m.system[0]; sys < 0 || sys > used {
		t.Fatalf("system CPU %v of %v in all", sys, used)
	}
	if got := msPerMB(2*time.Second, 4e6); got != 500 {
		t.Fatalf("2s for 4 MB: %v ms/MB", got)
	}
}
