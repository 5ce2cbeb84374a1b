package brokertest

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// closeHangAfter is how long a broker's Close may take in a test before
// the test binary reports it hung and exits: far beyond the shutdown's own
// deadlines, and far before the suite's timeout, whose report a CI log
// may cut to its last lines.
var closeHangAfter = 3 * time.Minute

// closeBounded runs a broker's close, and if it has not returned after
// closeHangAfter, prints every goroutine, then the broker's goroutines
// again in short (what the end of a cut log shows), and exits.
func closeBounded(name string, closeFn func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-time.After(closeHangAfter):
			reportHang(name)
		}
	}()
	closeFn()
	close(done)
}

func reportHang(name string) {
	buf := make([]byte, 64<<20)
	buf = buf[:runtime.Stack(buf, true)]
	os.Stderr.Write(buf)
	var short strings.Builder
	for _, g := range strings.Split(string(buf), "\n\n") {
		lines := strings.Split(g, "\n")
		var frames []string
		for i := 1; i+1 < len(lines); i += 2 {
			if strings.Contains(lines[i], "shale-log/shale/") {
				frames = append(frames, "    "+lines[i]+"  "+strings.TrimSpace(lines[i+1]))
			}
		}
		if len(frames) > 0 {
			fmt.Fprintf(&short, "%s\n%s\n", lines[0], strings.Join(frames[:min(len(frames), 4)], "\n"))
		}
	}
	fmt.Fprintf(os.Stderr, "\n=== the broker's goroutines, shortened ===\n%s", short.String())
	fmt.Fprintf(os.Stderr, "\nFAIL: %s: the broker's Close has not returned after %v (every goroutine above)\n", name, closeHangAfter)
	os.Exit(2)
}
