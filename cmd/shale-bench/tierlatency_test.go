package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestLatencyPhasesTakeTheRemotePhase(t *testing.T) {
	on, err := latencyPhases("alone, replay,remote")
	if err != nil {
		t.Fatal(err)
	}
	if !on[phaseAlone] || !on[phaseReplay] || !on[phaseRemote] || on[phaseGets] || on[phaseHog] {
		t.Fatalf("alone, replay, remote: %v", on)
	}
	if _, err := latencyPhases("alone,far"); err == nil {
		t.Fatal("an unknown phase was taken")
	}
}

// TestNiceProcessNicesEveryThread checks what the remote phase does to
// MinIO, on a child process of several threads.
func TestNiceProcessNicesEveryThread(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary itself, waiting: a Go process has several threads.
	cmd := exec.Command(exe, "-test.run=^TestNiceProcessHelperWaits$")
	cmd.Env = append(os.Environ(), "SHALE_BENCH_NICE_HELPER=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	pid := cmd.Process.Pid
	if err := niceProcess(pid, 7); err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + task.Name() + "/stat")
		if err != nil {
			continue // ended
		}
		// Fields after the command's closing parenthesis: the 19th of
		// the line is the niceness.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if fields[16] != "7" {
			t.Errorf("thread %s niced %s, want 7", task.Name(), fields[16])
		}
	}
}

func TestNiceProcessHelperWaits(t *testing.T) {
	if os.Getenv("SHALE_BENCH_NICE_HELPER") == "" {
		return
	}
	os.Stdin.Read(make([]byte, 1))
}
