//go:build !invariants

package tiering

// invariants turns on the expensive checks (the invariants build tag).
const invariants = false
