package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg/recordbatch"
)

func init() {
	// Kafka 4 dropped Produce v0-v2 (message formats v0/v1); v3 is the
	// first version that carries only v2 record batches.
	handler(kmsg.Produce, 3, 13, handleProduce)
}

// hwWait is an acks=all partition waiting for its high watermark.
type hwWait struct {
	p      *partition
	offset int64 // high watermark needed: the batch's last offset + 1
	ti, pi int   // where its answer sits in the response
}

// handleProduce validates and appends each partition's batch in request
// order (so pipelined requests of an idempotent producer stay in sequence),
// then, for acks=all, answers once every partition's high watermark covers
// its batch or the request's timeout passes.
func handleProduce(b *Broker, r *request, req *kmsg.ProduceRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	now := time.Now()
	var waits []hwWait
	anyError := false
	for ti := range req.Topics {
		rt := &req.Topics[ti]
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for pi := range rt.Partitions {
			rp := &rt.Partitions[pi]
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.BaseOffset = -1
			sp.LogAppendTime = -1
			sp.LogStartOffset = -1
			p, last, err := produceOne(r.ctx(), b, req, rt, rp, now, &sp)
			if err != nil {
				anyError = true
				sp.ErrorCode = kafkaError(err)
				if req.Version >= 8 {
					sp.ErrorMessage = errorMessage(err)
				}
			} else if req.Acks == -1 && p.highWatermark() <= last {
				waits = append(waits, hwWait{p: p, offset: last + 1, ti: ti, pi: pi})
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	if req.Acks == 0 {
		// No response: an error can only be signalled by closing the
		// connection, which makes the producer refresh its metadata.
		if anyError {
			r.closeConnection()
		} else {
			r.respondNothing()
		}
		return nil
	}
	if len(waits) == 0 {
		return resp
	}
	timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
	go func() {
		ctx, cancel := context.WithTimeout(r.ctx(), timeout)
		defer cancel()
		for _, w := range waits {
			if err := w.p.waitHW(ctx, w.offset); err != nil {
				resp.Topics[w.ti].Partitions[w.pi].ErrorCode = kafkaError(err)
			}
		}
		r.respond(resp)
	}()
	return nil
}

// produceOne validates and appends one partition's records, filling sp. It
// returns the partition appended to and the batch's last offset.
func produceOne(ctx context.Context, b *Broker, req *kmsg.ProduceRequest, rt *kmsg.ProduceRequestTopic, rp *kmsg.ProduceRequestTopicPartition, now time.Time, sp *kmsg.ProduceResponseTopicPartition) (*partition, int64, error) {
	if req.Acks != 0 && req.Acks != 1 && req.Acks != -1 {
		return nil, 0, errInvalidRequiredAcks
	}
	var p *partition
	var err error
	if req.Version >= 13 {
		p, err = b.partitionByID(rt.TopicID, rp.Partition)
		if err == errUnknownTopic {
			err = errUnknownTopicID
		}
	} else {
		p, err = b.partitionByName(rt.Topic, rp.Partition)
	}
	if err != nil {
		return nil, 0, err
	}
	if p.internal {
		// Kafka's answer to a client writing an internal topic: only
		// the coordinators write them, and a forged record there would
		// become a group's committed offset.
		return nil, 0, fmt.Errorf("%w: %s is an internal topic; clients may not produce to it", errInvalidTopic, p.topic)
	}
	sp.LogStartOffset = p.log.LogStartOffset()
	if req.TransactionID != nil {
		return nil, 0, fmt.Errorf("%w: transactions are not supported yet", errTransactionalID)
	}
	cfg := p.cfg.Load()
	if len(rp.Records) > int(cfg.maxMessageBytes) {
		return nil, 0, fmt.Errorf("%w: batch of %d bytes exceeds max.message.bytes %d", errMessageTooLarge, len(rp.Records), cfg.maxMessageBytes)
	}
	batch, rest, err := recordbatch.Next(rp.Records)
	if err != nil {
		return nil, 0, err
	}
	if batch == nil || len(rest) != 0 {
		return nil, 0, fmt.Errorf("%w: a produce request must carry exactly one record batch per partition", recordbatch.ErrInvalidRecord)
	}
	if batch.Control() || batch.Transactional() {
		return nil, 0, fmt.Errorf("%w: transactional and control batches are not supported yet", recordbatch.ErrInvalidRecord)
	}
	// Every record is looked at, compressed or not (as Kafka's
	// LogValidator does): the header's record count and timestamps are
	// only claims, and a compressed body may be garbage under a valid CRC.
	sum, err := recordbatch.ValidateProduce(ctx, batch, recordbatch.ValidateOptions{
		MaxDecompressed: recordbatch.MaxDecompressedFor(int(cfg.maxMessageBytes)),
		Budget:          b.scanBudget,
	})
	if err != nil {
		return nil, 0, err
	}
	res, appendTime, err := p.appendProduce(batch, sum, req.Acks, now)
	if err != nil {
		return nil, 0, err
	}
	b.metrics.producedBytes.Add(float64(len(batch)))
	b.metrics.producedRecords.Add(float64(batch.RecordCount()))
	sp.BaseOffset = res.FirstOffset
	sp.LogAppendTime = appendTime
	sp.LogStartOffset = res.LogStartOffset
	return p, res.LastOffset, nil
}
