package broker

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	handler(kmsg.InitProducerID, 0, 5, handleInitProducerID)
}

// handleInitProducerID gives an idempotent producer a fresh producer id
// with epoch 0, as Kafka does for producers without a transactional id.
// Transactional ids are refused until transactions exist.
func handleInitProducerID(b *Broker, r *request, req *kmsg.InitProducerIDRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	if req.TransactionalID != nil {
		resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
		return resp
	}
	go func() {
		ctx, cancel := context.WithTimeout(r.ctx(), 10*time.Second)
		defer cancel()
		id, err := b.producerIDs.next(ctx)
		if err != nil {
			b.log.Warn("cannot allocate a producer id", "err", err)
			resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		} else {
			resp.ProducerID, resp.ProducerEpoch = id, 0
		}
		r.respond(resp)
	}()
	return nil
}

// producerIDBlock is how many producer ids a broker takes from the
// metadata store at once (Kafka's blocks are 1000 too).
const producerIDBlock = 1000

// producerIDAllocator hands out producer ids from blocks reserved in the
// metadata store, so ids are unique across brokers and restarts.
type producerIDAllocator struct {
	alloc  func(ctx context.Context, n int64) (int64, error)
	mu     sync.Mutex
	nextID int64
	end    int64
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
	id := a.nextID
	a.nextID++
	return id, nil
}
