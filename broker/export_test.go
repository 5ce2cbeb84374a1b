package broker

import "context"

// Every test of the package runs with poisoned buffer pools: a buffer
// used after it went back to a pool shows as corrupt data.
func init() { poisonBuffers = true }

// RequestMemoryInUse is the request budget held, for tests.
func (b *Broker) RequestMemoryInUse() int64 { return b.requestMemory.inUse() }

// LeaseProvenTag is the tagged field of a Metadata answer to another broker
// that says the answering broker's lease is proven, for tests.
const LeaseProvenTag = leaseProvenTag

// SetPoisonBuffers turns pool poisoning on or off (benchmarks turn it off).
func SetPoisonBuffers(on bool) { poisonBuffers = on }

// HoldISRWrites sends n ISR writes for a hosted partition, as its leader
// does, against a stale partition epoch so that each fails and then waits
// for the partition's replication lock, which is held until release.
func (b *Broker) HoldISRWrites(topic string, index int32, n int) (release func()) {
	p, ok := b.replicas.lookupByName(topic, index)
	if !ok {
		panic("partition not hosted")
	}
	s := p.state.Load()
	p.repl.Lock()
	for range n {
		b.alterISR(p, s.isr, s.leaderEpoch, p.repl.partitionEpoch-1)
	}
	return p.repl.Unlock
}

// ResponseMemoryInUse is the encoded response bytes queued, for tests.
func (b *Broker) ResponseMemoryInUse() int64 { return b.responseMemory.inUse() }

// HoldConnectionsLock takes the lock of the connection table until
// release, as a deadlocked request path would hold it.
func (b *Broker) HoldConnectionsLock() (release func()) {
	b.connsMu.Lock()
	return b.connsMu.Unlock
}

// Crash stops the broker as a killed process stops, for tests: no
// controlled shutdown, every client socket and listener closed at once.
// The registration and controller lease are revoked on the way out unless
// the broker's etcd is cut first, as a test killing it does.
func (b *Broker) Crash() {
	b.shutdownOnce.Do(func() {})
	b.connsMu.Lock()
	for ln := range b.listeners {
		ln.Close()
	}
	for c := range b.conns {
		c.nc.Close()
	}
	b.connsMu.Unlock()
	b.Close()
}

// ServesConnFrom reports whether the broker still serves a client
// connection from addr: false once its reader and writer have returned,
// with everything they held given back.
func (b *Broker) ServesConnFrom(addr string) bool {
	b.connsMu.Lock()
	defer b.connsMu.Unlock()
	for c := range b.conns {
		if c.nc.RemoteAddr().String() == addr {
			return true
		}
	}
	return false
}

// ReplicaLogStart is the log start of this broker's replica of a
// partition, as its local log holds it (ok false when it hosts none).
func (b *Broker) ReplicaLogStart(topic string, index int32) (int64, bool) {
	p, ok := b.replicas.lookupByName(topic, index)
	if !ok {
		return 0, false
	}
	return p.log.LogStartOffset(), true
}

// PeerClient is an inter-broker connection, for tests.
type PeerClient = peerClient

// DialAsPeer connects to addr authenticated as broker self of b's cluster
// (its Fetch requests with replica id self are a follower's).
func (b *Broker) DialAsPeer(ctx context.Context, addr string, self int32) (*PeerClient, error) {
	return dialPeer(ctx, nil, b.peerTLS(), addr, self, b.secret)
}

// ColdStep is the step a tiered broker's cold work copies in now (see
// tiering.Reader.ColdStep), for tests.
func (b *Broker) ColdStep() int { return b.tier.reader.ColdStep() }

// ParkedProduces counts the produce requests that waited for a leader to
// read its manifest or open its log, for tests.
func (b *Broker) ParkedProduces() int64 { return b.parkedProduces.Load() }

// DeletionsRunning counts the topic deletions this broker runs or whose
// directories it still watches, for tests.
func (b *Broker) DeletionsRunning() int {
	n := 0
	b.tier.deleting.Range(func(any, any) bool { n++; return true })
	return n
}

// FetchSessions is how many fetch sessions the broker keeps, for tests.
func (b *Broker) FetchSessions() int {
	b.fetchSessions.mu.Lock()
	defer b.fetchSessions.mu.Unlock()
	return b.fetchSessions.lru.Len()
}

// SetRemoteScrubStep sets the segment bytes a step of a remote scrub reads
// at most, and returns a function that restores it.
func SetRemoteScrubStep(n int64) (restore func()) {
	old := remoteScrubStep
	remoteScrubStep = n
	return func() { remoteScrubStep = old }
}
