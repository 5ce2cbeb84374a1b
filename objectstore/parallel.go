package objectstore

import (
	"context"
	"errors"
	"fmt"
	"io"

	"golang.org/x/sync/errgroup"
)

// ReadAt fills p with the object's bytes from offset off, reading parts of
// partSize bytes with up to concurrency Gets in flight: the way to read a
// large range at the store's aggregate speed rather than one stream's. It
// returns how many bytes it read, fewer than len(p) only when the object
// ends first (with io.ErrUnexpectedEOF), like io.ReaderAt.
func ReadAt(ctx context.Context, b Bucket, key string, p []byte, off int64, partSize int64, concurrency int) (int, error) {
	if partSize <= 0 || concurrency <= 0 {
		return 0, fmt.Errorf("objectstore: read %s: part size %d, concurrency %d", key, partSize, concurrency)
	}
	parts := (int64(len(p)) + partSize - 1) / partSize
	got := make([]int64, parts)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for i := range parts {
		g.Go(func() error {
			start := i * partSize
			end := min(start+partSize, int64(len(p)))
			body, err := b.Get(gctx, key, off+start, end-start)
			if errors.Is(err, ErrInvalidRange) && i > 0 {
				return nil // past the object's end
			}
			if err != nil {
				return err
			}
			defer body.Close()
			n, err := io.ReadFull(body, p[start:end])
			got[i] = int64(n)
			if err == io.ErrUnexpectedEOF || err == io.EOF {
				return nil // the object ends in this part
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	n := int64(0)
	for i, g := range got {
		n += g
		if g < min(partSize, int64(len(p))-int64(i)*partSize) {
			break
		}
	}
	if n < int64(len(p)) {
		return int(n), io.ErrUnexpectedEOF
	}
	return int(n), nil
}
