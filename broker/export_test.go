package broker

// Every test of the package runs with poisoned buffer pools: a buffer
// used after it went back to a pool shows as corrupt data.
func init() { poisonBuffers = true }

// RequestMemoryInUse is the request budget held, for tests.
func (b *Broker) RequestMemoryInUse() int64 { return b.requestMemory.inUse() }

// SetPoisonBuffers turns pool poisoning on or off (benchmarks turn it off).
func SetPoisonBuffers(on bool) { poisonBuffers = on }
