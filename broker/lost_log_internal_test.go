package broker

import (
	"os"
	"path/filepath"
	"testing"
)

// TestALostLogIsKnownAtOpenAndAfterARestart: a partition directory that
// does not exist, for a partition older than this broker's registration
// whose ISR names the broker beside others, is a lost log; the mark the
// open leaves keeps it lost across a restart that comes before the broker
// saw itself out of the ISR, and only while the ISR still counts on it.
func TestALostLogIsKnownAtOpenAndAfterARestart(t *testing.T) {
	const self = 1
	old := partitionView{isr: []int32{1, 2, 3}, created: 10}
	cases := []struct {
		name    string
		created bool
		mark    bool
		pv      partitionView
		since   int64
		want    bool
	}{
		{"no directory, an older partition that counts on it", true, false, old, 20, true},
		{"no directory, a partition created since the registration", true, false, partitionView{isr: []int32{1, 2, 3}, created: 30}, 20, false},
		{"no directory, the ISR does not name it (a replica being added)", true, false, partitionView{isr: []int32{2, 3}, created: 10}, 20, false},
		{"no directory, the only ISR member", true, false, partitionView{isr: []int32{1}, created: 10}, 20, false},
		{"no directory, the registration unknown", true, false, old, 0, false},
		{"a directory", false, false, old, 20, false},
		{"a marked directory, the ISR still counting on it", false, true, old, 20, true},
		{"a marked directory, out of the ISR", false, true, partitionView{isr: []int32{2, 3}, created: 10}, 20, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "t-0")
			if !tc.created {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := markLost(dir, tc.mark); err != nil {
					t.Fatal(err)
				}
			}
			if got := lostAtOpen(dir, tc.created, tc.pv, self, tc.since); got != tc.want {
				t.Fatalf("lostAtOpen = %v, want %v", got, tc.want)
			}
		})
	}
	dir := t.TempDir()
	if err := markLost(dir, true); err != nil {
		t.Fatal(err)
	}
	if err := markLost(dir, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, lostLogFile)); !os.IsNotExist(err) {
		t.Fatalf("the mark is still there after its removal: %v", err)
	}
	if err := markLost(dir, false); err != nil {
		t.Fatalf("removing a mark that is not there: %v", err)
	}
}

// TestAMachineRebootIsToldFromAProcessRestart: the boot id a start records
// in the data directory is the running kernel's, so the next start on the
// same boot finds it unchanged; another id recorded (the machine booted
// again), or none (a directory from before the record), reads as a reboot.
func TestAMachineRebootIsToldFromAProcessRestart(t *testing.T) {
	if _, err := os.Stat(bootIDPath); err != nil {
		t.Fatalf("this test needs Linux's boot id: %v", err)
	}
	dir := t.TempDir()
	rebooted, current := machineRebooted(dir)
	if !rebooted || current == "" {
		t.Fatalf("with no boot recorded: rebooted %v, current %q; want a reboot and the current id", rebooted, current)
	}
	recordBootID(dir, current, nil)
	if rebooted, again := machineRebooted(dir); rebooted || again != current {
		t.Fatalf("on the recorded boot: rebooted %v, current %q (recorded %q)", rebooted, again, current)
	}
	if err := os.WriteFile(filepath.Join(dir, bootIDFile), []byte("another-boot\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if rebooted, _ := machineRebooted(dir); !rebooted {
		t.Fatal("another boot recorded reads as the same boot")
	}
}
