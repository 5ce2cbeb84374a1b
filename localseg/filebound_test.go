package localseg

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Fatal("counting descriptors needs /proc/self/fd")
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// Many logs sharing one FileCache hold at most its bound of descriptors,
// active segments included: a broker with thousands of partitions must not
// keep a descriptor per partition. Appends and reads to logs whose active
// segment was evicted reopen it and see every record.
func TestManyLogsStayWithinTheOpenFileBound(t *testing.T) {
	const logs, bound = 40, 8
	files := NewFileCache(bound)
	root := t.TempDir()
	before := openFDs(t)
	opts := Options{Files: files, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var all []*Log
	t.Cleanup(func() {
		for _, l := range all {
			l.Close()
		}
	})
	for i := 0; i < logs; i++ {
		l, err := Open(filepath.Join(root, fmt.Sprintf("p-%d", i)), Config{}, opts)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, l)
		if _, err := l.AppendAsLeader(batch(2, 10, 1), 0); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string) {
		t.Helper()
		if n := files.OpenFiles(); n > bound {
			t.Fatalf("%s: the cache counts %d open segments, bound %d", when, n, bound)
		}
		if n := openFDs(t) - before; n > bound+5 {
			t.Fatalf("%s: %d more descriptors open than before %d logs, bound %d", when, n, logs, bound)
		}
	}
	check("after appending")
	for round := 0; round < 2; round++ {
		for i, l := range all {
			if _, err := l.AppendAsLeader(batch(1, 10, 1), 0); err != nil {
				t.Fatalf("append to log %d after eviction: %v", i, err)
			}
			r, err := l.Read(0, 1<<20, l.LogEndOffset(), true)
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.Bytes()
			r.Release()
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for b := got; len(b) > 0; {
				var rb recordbatch.Batch
				var err error
				if rb, b, err = recordbatch.Next(b); err != nil {
					t.Fatalf("log %d: %v", i, err)
				}
				n += int(rb.RecordCount())
			}
			if n != 3+round {
				t.Fatalf("log %d: read %d records, want %d", i, n, 3+round)
			}
		}
		check(fmt.Sprintf("round %d", round))
	}
	for _, l := range all {
		if err := l.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	check("after flushing")
}
