package broker

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// Producer ids carry proof that the cluster handed them out, so that a
// produce with an invented id is refused (UNKNOWN_PRODUCER_ID) instead of
// growing every partition's producer state, and so that the check costs no
// lookup and holds on every broker, across restarts and failovers: an id is
//
//	serial<<producerIDTagBits | tag(serial)
//
// where serial comes from the cluster-wide counter in the metadata store
// (reserved in blocks, never handed out twice) and tag is the low
// producerIDTagBits bits of HMAC-SHA256 over the serial, keyed by the
// cluster secret, which no Kafka client can read. A client guessing ids is
// right once in 2^24 tries; serials last for 2^39 ids (17 years at a
// thousand InitProducerId a second).
const (
	producerIDTagBits = 24
	producerIDSerials = 1 << (63 - producerIDTagBits)
	// producerIDBlock is how many serials a broker takes from the
	// metadata store at once (Kafka's blocks are 1000 too).
	producerIDBlock = 1000
)

var errUnknownProducerID = errors.New("broker: producer id was not handed out by this cluster")

// producerIDAllocator hands out producer ids from blocks of serials
// reserved in the metadata store, so ids are unique across brokers and
// restarts, and checks ids presented in produce requests.
type producerIDAllocator struct {
	alloc func(ctx context.Context, n int64) (int64, error)
	tags  sync.Pool // hash.Hash (HMAC-SHA256 under the key)

	mu     sync.Mutex
	nextID int64
	end    int64
}

func newProducerIDAllocator(alloc func(ctx context.Context, n int64) (int64, error)) *producerIDAllocator {
	a := &producerIDAllocator{alloc: alloc}
	a.setSecret("")
	return a
}

// setSecret keys the ids with the cluster secret. Called once, before the
// broker serves clients.
func (a *producerIDAllocator) setSecret(secret string) {
	key := append([]byte("shale producer id\x00"), secret...)
	a.tags.New = func() any { return hmac.New(sha256.New, key) }
}

// tag is serial's proof.
func (a *producerIDAllocator) tag(serial int64) int64 {
	h := a.tags.Get().(hash.Hash)
	defer a.tags.Put(h)
	h.Reset()
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], uint64(serial))
	h.Write(buf[:])
	var sum [sha256.Size]byte
	return int64(binary.BigEndian.Uint64(h.Sum(sum[:0])) & (1<<producerIDTagBits - 1))
}

// known reports whether id is one this cluster handed out (any id with a
// valid tag: ids are checked without state).
func (a *producerIDAllocator) known(id int64) bool {
	return id >= 0 && a.tag(id>>producerIDTagBits) == id&(1<<producerIDTagBits-1)
}

func (a *producerIDAllocator) next(ctx context.Context) (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.nextID >= a.end {
		first, err := a.alloc(ctx, producerIDBlock)
		if err != nil {
			return -1, err
		}
		a.nextID, a.end = first, first+producerIDBlock
	}
	serial := a.nextID
	if serial >= producerIDSerials {
		return -1, fmt.Errorf("broker: producer id serials exhausted (%d)", serial)
	}
	a.nextID++
	return serial<<producerIDTagBits | a.tag(serial), nil
}
