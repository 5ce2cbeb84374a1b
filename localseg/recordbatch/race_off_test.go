//go:build !race

package recordbatch

// raceEnabled: built with the race detector, whose sync.Pool drops a share
// of what is put back, so that allocation counts mean nothing.
const raceEnabled = false
