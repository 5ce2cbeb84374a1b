package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// The sendfile reference: a server that is not Shale answers the raw
// fetch's own requests with sendfile(2) of a page-cached file of the same
// record batches, in a process of its own, so that its CPU is read apart.
// It does nothing a broker must (no log, no index, no session, no
// metadata): beside it, a hot fetch's MB/s says how much of what a
// sendfile-based reader can do on this machine, with the client beside it,
// the broker reaches. Loopback TCP's write and read of user memory is no
// such ceiling: sendfile's path through the kernel is not a write's.

// sendfileRefFileBytes is the size of the reference's file of batches:
// larger than one fetch, small enough to stay in the page cache.
const sendfileRefFileBytes = 64 << 20

// startSendfileRef starts the reference in a child process (this program
// again, with -sendfile-host), its file in dir, made of batches as
// encodeBatch builds them for recordBytes and batchBytes.
func startSendfileRef(dir string, recordBytes, batchBytes int) (*target, error) {
	return startChild("sendfile ref", "-sendfile-host", dir, "-raw-record-bytes", strconv.Itoa(recordBytes), "-raw-batch-bytes", strconv.Itoa(batchBytes))
}

// hostSendfileRef is the child's side: it serves the reference, prints
// the address and runs until its stdin closes.
func hostSendfileRef(dir string, recordBytes, batchBytes int) error {
	ref, err := newSendfileRef(dir, recordBytes, batchBytes)
	if err != nil {
		return err
	}
	defer ref.close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	go ref.accept(ln)
	fmt.Println(ln.Addr())
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// newSendfileRef writes the reference's file of batches in dir and reads
// it once into the page cache.
func newSendfileRef(dir string, recordBytes, batchBytes int) (*sendfileRef, error) {
	batch, records := encodeBatch(recordBytes, batchBytes, time.Now())
	f, err := os.CreateTemp(dir, "sendfile-ref-")
	if err != nil {
		return nil, err
	}
	ref := &sendfileRef{file: f, batchLen: len(batch), perBatch: int64(records), batches: max(1, sendfileRefFileBytes/len(batch))}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := 0; i < ref.batches; i++ {
		w.Write(batch)
	}
	err = w.Flush()
	if err == nil {
		_, err = io.Copy(io.Discard, io.NewSectionReader(f, 0, int64(ref.batches*len(batch))))
	}
	if err != nil {
		ref.close()
		return nil, err
	}
	return ref, nil
}

func (s *sendfileRef) close() {
	s.file.Close()
	os.Remove(s.file.Name())
}

// accept serves each connection ln accepts until ln is closed.
func (s *sendfileRef) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go s.serve(c.(*net.TCPConn))
	}
}

type sendfileRef struct {
	file     *os.File
	batchLen int
	perBatch int64 // records per batch
	batches  int   // in the file
}

// serve answers each Fetch (v12, as the raw fetch sends) on c with whole
// batches, as many as each partition's and the request's limits allow
// (at least one in the first partition, as Kafka does), from the file at
// the place of the partition's fetch offset: the fields before each
// partition's records are written with MSG_MORE, to go out with them, the
// records with sendfile, the last fields with a write.
func (s *sendfileRef) serve(c *net.TCPConn) {
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	r := bufio.NewReaderSize(c, 64<<10)
	var frame, out []byte
	for {
		var size [4]byte
		if _, err := io.ReadFull(r, size[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(size[:]))
		if n < 8 || n > 1<<20 {
			return
		}
		if cap(frame) < n {
			frame = make([]byte, n)
		}
		frame = frame[:n]
		if _, err := io.ReadFull(r, frame); err != nil {
			return
		}
		req, corr, err := parseRefFetch(frame)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sendfile reference:", err)
			return
		}
		type part struct {
			at, off, n int64 // at: position in out before which the range goes
		}
		var parts []part
		out = append(out[:0], 0, 0, 0, 0)
		out = binary.BigEndian.AppendUint32(out, uint32(corr))
		out = append(out, 0)                      // response header tags
		out = append(out, make([]byte, 4+2+4)...) // throttle, error, session
		out = binary.AppendUvarint(out, uint64(len(req.Topics))+1)
		remaining := int64(req.MaxBytes)
		var records int64
		for _, t := range req.Topics {
			out = binary.AppendUvarint(out, uint64(len(t.Topic))+1)
			out = append(out, t.Topic...)
			out = binary.AppendUvarint(out, uint64(len(t.Partitions))+1)
			for _, p := range t.Partitions {
				k := min(int64(p.PartitionMaxBytes), remaining) / int64(s.batchLen)
				if k <= 0 && len(parts) == 0 && records == 0 {
					k = 1
				}
				k = max(0, min(k, int64(s.batches)))
				first := p.FetchOffset / s.perBatch % int64(s.batches)
				if first+k > int64(s.batches) {
					first = 0
				}
				length := k * int64(s.batchLen)
				remaining -= length
				records += k * s.perBatch
				out = binary.BigEndian.AppendUint32(out, uint32(p.Partition))
				out = append(out, 0, 0) // error
				hw := p.FetchOffset + k*s.perBatch
				out = binary.BigEndian.AppendUint64(out, uint64(hw))
				out = binary.BigEndian.AppendUint64(out, uint64(hw))
				out = binary.BigEndian.AppendUint64(out, 0) // log start
				out = append(out, 0)                        // no aborted transactions
				out = binary.BigEndian.AppendUint32(out, 0xffffffff)
				out = binary.AppendUvarint(out, uint64(length)+1)
				if length > 0 {
					parts = append(parts, part{at: int64(len(out)), off: first * int64(s.batchLen), n: length})
				}
				out = append(out, 0) // partition tags
			}
			out = append(out, 0) // topic tags
		}
		out = append(out, 0) // response tags
		total := int64(len(out) - 4)
		for _, p := range parts {
			total += p.n
		}
		binary.BigEndian.PutUint32(out, uint32(total))
		prev := int64(0)
		for _, p := range parts {
			if err := sendMore(rc, out[prev:p.at]); err != nil {
				return
			}
			if err := sendFileRange(rc, s.file, p.off, p.n); err != nil {
				fmt.Fprintln(os.Stderr, "sendfile reference:", err)
				return
			}
			prev = p.at
		}
		if _, err := c.Write(out[prev:]); err != nil {
			return
		}
	}
}

// parseRefFetch reads a Fetch request frame (without its size): the
// request and its correlation id.
func parseRefFetch(frame []byte) (*kmsg.FetchRequest, int32, error) {
	key, version := int16(binary.BigEndian.Uint16(frame)), int16(binary.BigEndian.Uint16(frame[2:]))
	corr := int32(binary.BigEndian.Uint32(frame[4:]))
	if key != kmsg.Fetch.Int16() || version != rawFetchVersion {
		return nil, corr, fmt.Errorf("request key %d version %d, want Fetch v%d", key, version, rawFetchVersion)
	}
	b := frame[8:]
	if len(b) < 2 {
		return nil, corr, errors.New("short request header")
	}
	if id := int16(binary.BigEndian.Uint16(b)); id > 0 {
		b = b[2+int(id):]
	} else {
		b = b[2:]
	}
	b, err := skipTaggedFields(b)
	if err != nil {
		return nil, corr, err
	}
	req := kmsg.NewPtrFetchRequest()
	req.Version = version
	if err := req.ReadFrom(b); err != nil {
		return nil, corr, err
	}
	return req, corr, nil
}

// sendMore writes b with MSG_MORE: it waits in the socket for the range
// sent next.
func sendMore(rc syscall.RawConn, b []byte) error {
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		for len(b) > 0 {
			n, err := syscall.SendmsgN(int(fd), b, nil, nil, syscall.MSG_MORE)
			if n > 0 {
				b = b[n:]
			}
			switch {
			case err == syscall.EAGAIN:
				return false
			case err == syscall.EINTR:
				continue
			case err != nil:
				werr = err
				return true
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	return werr
}

// sendFileRange sends n bytes of f from off with sendfile(2), waiting for
// room in the socket when it is full.
func sendFileRange(rc syscall.RawConn, f *os.File, off, n int64) error {
	var werr error
	infd := int(f.Fd())
	err := rc.Write(func(fd uintptr) bool {
		for n > 0 {
			w, err := syscall.Sendfile(int(fd), infd, &off, int(min(n, 1<<30)))
			if w > 0 {
				n -= int64(w)
			}
			switch {
			case err == syscall.EAGAIN:
				return false
			case err == syscall.EINTR:
				continue
			case err != nil:
				werr = err
				return true
			case w == 0:
				werr = io.ErrUnexpectedEOF
				return true
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	return werr
}
