package tiering

import (
	"bytes"
	"testing"
)

// TestPrefaultKeepsContents: populating a buffer's pages changes no byte,
// of a fresh buffer (zero) or of one written before (at any alignment).
func TestPrefaultKeepsContents(t *testing.T) {
	fresh := make([]byte, 4<<20)
	prefault(fresh)
	if !bytes.Equal(fresh, make([]byte, len(fresh))) {
		t.Fatal("a fresh buffer is not zero after prefault")
	}
	written := make([]byte, 1<<20+123)
	for i := range written {
		written[i] = byte(i * 7)
	}
	want := bytes.Clone(written)
	prefault(written)
	prefault(written[1:])
	prefault(written[:100])
	if !bytes.Equal(written, want) {
		t.Fatal("prefault changed a written buffer")
	}
}
