package broker

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// errBadRequest means the bytes of a request could not be parsed; the
// connection is closed, as Kafka does for an InvalidRequestException.
var errBadRequest = errors.New("broker: malformed request")

// requestHeader is Kafka's request header, v1 or v2 (v2 adds tagged fields
// for flexible versions; the client id stays a non-compact nullable string
// in both).
type requestHeader struct {
	key           int16
	version       int16
	correlationID int32
	clientID      string
}

// parseRequestHeader reads the header fields every version shares: key,
// version and correlation id, then the client id. It returns the rest of the
// frame (the tagged fields of a v2 header and the body). A client id equal
// to lastClientID (the connection's last request's) is that string, not a
// new copy: a client names itself the same in every request.
func parseRequestHeader(frame []byte, lastClientID string) (requestHeader, []byte, error) {
	var h requestHeader
	if len(frame) < 10 {
		return h, nil, fmt.Errorf("%w: %d-byte frame cannot hold a request header", errBadRequest, len(frame))
	}
	h.key = int16(binary.BigEndian.Uint16(frame))
	h.version = int16(binary.BigEndian.Uint16(frame[2:]))
	h.correlationID = int32(binary.BigEndian.Uint32(frame[4:]))
	n := int16(binary.BigEndian.Uint16(frame[8:]))
	rest := frame[10:]
	if n > 0 {
		if int(n) > len(rest) {
			return h, nil, fmt.Errorf("%w: client id of %d bytes in %d", errBadRequest, n, len(rest))
		}
		if id := rest[:n]; string(id) == lastClientID {
			h.clientID = lastClientID
		} else {
			h.clientID = string(id)
		}
		rest = rest[n:]
	} else if n < -1 {
		return h, nil, fmt.Errorf("%w: client id length %d", errBadRequest, n)
	}
	return h, rest, nil
}

// skipTags skips a tagged-field section (uvarint count, then per field a
// uvarint tag, a uvarint size and the bytes), checking every size against
// the bytes left.
func skipTags(b []byte) ([]byte, error) {
	count, n := binary.Uvarint(b)
	if n <= 0 || count > uint64(len(b)) {
		return nil, fmt.Errorf("%w: bad tagged field count", errBadRequest)
	}
	b = b[n:]
	for i := uint64(0); i < count; i++ {
		if _, n = binary.Uvarint(b); n <= 0 {
			return nil, fmt.Errorf("%w: bad tag", errBadRequest)
		}
		b = b[n:]
		size, n := binary.Uvarint(b)
		if n <= 0 || size > uint64(len(b)-n) {
			return nil, fmt.Errorf("%w: bad tagged field size", errBadRequest)
		}
		b = b[n+int(size):]
	}
	return b, nil
}

// decodeRequest parses a whole request frame into its kmsg type. An unknown
// key or an unsupported version is not an error here: the request is
// returned nil and the caller answers or closes as Kafka does. lastClientID
// is as parseRequestHeader takes it.
func decodeRequest(frame []byte, lastClientID string) (requestHeader, kmsg.Request, error) {
	h, rest, err := parseRequestHeader(frame, lastClientID)
	if err != nil {
		return h, nil, err
	}
	api, ok := apis[h.key]
	if !ok || h.version < api.min || h.version > api.max {
		return h, nil, nil
	}
	req := kmsg.RequestForKey(h.key)
	req.SetVersion(h.version)
	if req.IsFlexible() {
		if rest, err = skipTags(rest); err != nil {
			return h, nil, err
		}
	}
	if err := req.ReadFrom(rest); err != nil {
		return h, nil, fmt.Errorf("%w: %s v%d: %w", errBadRequest, kmsg.NameForKey(h.key), h.version, err)
	}
	return h, req, nil
}
