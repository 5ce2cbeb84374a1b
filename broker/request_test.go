package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// encodeRequest frames a kmsg request as a client would (without the size).
func encodeRequest(req kmsg.Request, correlationID int32, clientID *string) []byte {
	var f kmsg.RequestFormatter
	if clientID != nil {
		f = *kmsg.NewRequestFormatter(kmsg.FormatterClientID(*clientID))
	}
	b := f.AppendRequest(nil, req, correlationID)
	return b[4:] // AppendRequest includes the size prefix
}

func TestDecodeRequestRoundTripsEveryAdvertisedVersion(t *testing.T) {
	id := "client-1"
	for key, a := range apis {
		for v := a.min; v <= a.max; v++ {
			req := kmsg.RequestForKey(key)
			req.SetVersion(v)
			frame := encodeRequest(req, 42, &id)
			h, got, err := decodeRequest(frame, "")
			if err != nil {
				t.Fatalf("%s v%d: %v", kmsg.NameForKey(key), v, err)
			}
			if got == nil || h.key != key || h.version != v || h.correlationID != 42 || h.clientID != id {
				t.Fatalf("%s v%d: header %+v, request %v", kmsg.NameForKey(key), v, h, got)
			}
		}
	}
}

func TestDecodeRequestUnsupportedVersionIsNotAnError(t *testing.T) {
	req := kmsg.NewPtrApiVersionsRequest()
	req.SetVersion(99)
	frame := binary.BigEndian.AppendUint16(nil, uint16(kmsg.ApiVersions))
	frame = binary.BigEndian.AppendUint16(frame, 99)
	frame = binary.BigEndian.AppendUint32(frame, 7)
	frame = binary.BigEndian.AppendUint16(frame, 0xffff) // null client id
	h, got, err := decodeRequest(frame, "")
	if err != nil || got != nil || h.version != 99 || h.correlationID != 7 {
		t.Fatalf("got %+v %v %v", h, got, err)
	}
}

func TestDecodeRequestRefusesGarbage(t *testing.T) {
	cases := map[string][]byte{
		"short":           {0, 3, 0},
		"client id long":  {0, 3, 0, 1, 0, 0, 0, 1, 0x7f, 0xff, 'x'},
		"client id < -1":  {0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xfe},
		"truncated body":  encodeRequest(&kmsg.CreateTopicsRequest{Version: 5, Topics: []kmsg.CreateTopicsRequestTopic{{Topic: "abc"}}}, 1, nil)[:14],
		"bad tag section": {0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f},
	}
	for name, frame := range cases {
		if _, _, err := decodeRequest(frame, ""); !errors.Is(err, errBadRequest) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// FuzzDecodeRequest: any frame decodes to a request, "unsupported", or
// errBadRequest; never a panic.
func FuzzDecodeRequest(f *testing.F) {
	id := "fuzz"
	for key, a := range apis {
		req := kmsg.RequestForKey(key)
		req.SetVersion(a.max)
		f.Add(encodeRequest(req, 1, &id))
		req.SetVersion(a.min)
		f.Add(encodeRequest(req, 1, nil))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		watchdog := time.AfterFunc(5*time.Second, func() { panic(fmt.Sprintf("decoding took over 5s: %x", frame)) })
		defer watchdog.Stop()
		_, req, err := decodeRequest(frame, "")
		if err != nil && !errors.Is(err, errBadRequest) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		if err == nil && req != nil {
			// A decoded request must re-encode without panicking.
			_ = req.AppendTo(nil)
		}
	})
}

// A client id equal to the connection's last one is taken without a copy;
// another is read as sent.
func TestRequestHeaderKeepsTheLastClientID(t *testing.T) {
	frame := func(id string) []byte {
		f := binary.BigEndian.AppendUint16(nil, uint16(kmsg.Metadata))
		f = binary.BigEndian.AppendUint16(f, 1)
		f = binary.BigEndian.AppendUint32(f, 7)
		f = binary.BigEndian.AppendUint16(f, uint16(len(id)))
		return append(f, id...)
	}
	last := "producer-1"
	same := frame(last)
	if allocs := testing.AllocsPerRun(100, func() {
		if h, _, err := parseRequestHeader(same, last); err != nil || h.clientID != last {
			t.Fatalf("client id %q, %v", h.clientID, err)
		}
	}); allocs != 0 {
		t.Fatalf("%v allocations reading the last client id again", allocs)
	}
	for _, id := range []string{"producer-2", "producer-", "producer-10", ""} {
		h, _, err := parseRequestHeader(frame(id), last)
		if err != nil || h.clientID != id {
			t.Fatalf("client id %q read as %q, %v", id, h.clientID, err)
		}
	}
}
