package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// processCPU returns the user plus system CPU time a process has used, all
// its threads together, from /proc/<pid>/stat.
func processCPU(pid int) (time.Duration, error) {
	user, system, err := processTimes(pid)
	return user + system, err
}

// processTimes returns the user and the system (kernel) CPU time a process
// has used, all its threads together, from /proc/<pid>/stat.
func processTimes(pid int) (user, system time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count the fields after its closing one. utime and stime are
	// fields 14 and 15, the 12th and 13th after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var ticks [2]int64
	for j, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks[j] = n
	}
	return time.Duration(ticks[0]) * time.Second / clockTicks, time.Duration(ticks[1]) * time.Second / clockTicks, nil
}

// cpuMeter measures the CPU time a set of processes use between start and
// stop.
type cpuMeter struct {
	pids              []int
	before, beforeSys []time.Duration
	// system is each process's system (kernel) CPU time from start to
	// the last stop (-1 when it could not be read).
	system []time.Duration
}

func startCPU(pids ...int) *cpuMeter {
	m := &cpuMeter{pids: pids, before: make([]time.Duration, len(pids)), beforeSys: make([]time.Duration, len(pids))}
	for i, pid := range pids {
		user, system, err := processTimes(pid)
		m.before[i], m.beforeSys[i] = user+system, system
		if err != nil {
			m.before[i] = -1
		}
	}
	return m
}

// stop returns each process's CPU time since start (-1 when it could not
// be read), and keeps the system part of it in system.
func (m *cpuMeter) stop() []time.Duration {
	used := make([]time.Duration, len(m.pids))
	m.system = make([]time.Duration, len(m.pids))
	for i, pid := range m.pids {
		user, system, err := processTimes(pid)
		if err != nil || m.before[i] < 0 {
			used[i], m.system[i] = -1, -1
			continue
		}
		used[i], m.system[i] = user+system-m.before[i], system-m.beforeSys[i]
	}
	return used
}

// msPerMB is CPU milliseconds per MB (10^6 bytes) moved.
func msPerMB(cpu time.Duration, bytes int64) float64 {
	if cpu < 0 || bytes <= 0 {
		return -1
	}
	return float64(cpu.Milliseconds()) / (float64(bytes) / 1e6)
}

// loadAverage is the 1-minute load average, to print beside figures
// measured on a shared machine.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}
