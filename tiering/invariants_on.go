//go:build invariants

package tiering

// invariants turns on the expensive checks: released chunk buffers are
// poisoned, so a read of one after its release returns wrong bytes.
const invariants = true
