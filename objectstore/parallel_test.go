package objectstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
)

func TestReadAt(t *testing.T) {
	ctx := context.Background()
	b := faulty.New(objectstore.NewMem())
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	b.Put(ctx, "k", bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{})
	for _, tc := range []struct {
		off, n, part int64
		want         int
		err          error
	}{
		{0, 1000, 100, 1000, nil},
		{0, 1000, 64, 1000, nil},
		{37, 500, 64, 500, nil},
		{900, 300, 64, 100, io.ErrUnexpectedEOF},
		{950, 50, 1000, 50, nil},
		{0, 1000, 1, 1000, nil},
	} {
		p := make([]byte, tc.n)
		n, err := objectstore.ReadAt(ctx, b, "k", p, tc.off, tc.part, 4)
		if n != tc.want || !errors.Is(err, tc.err) || !bytes.Equal(p[:n], data[tc.off:tc.off+int64(n)]) {
			t.Errorf("ReadAt(off %d, %d bytes, parts of %d) = %d, %v", tc.off, tc.n, tc.part, n, err)
		}
	}
	b.Add(faulty.Rule{Op: faulty.Get, Times: 1, Fail: true})
	if _, err := objectstore.ReadAt(ctx, b, "k", make([]byte, 1000), 0, 100, 4); !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("a failed part: %v", err)
	}
	if _, err := objectstore.ReadAt(ctx, b, "missing", make([]byte, 10), 0, 100, 4); !errors.Is(err, objectstore.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
}
