package localseg

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadCheckpoint means a checkpoint file is torn or corrupt; callers fall
// back to a safe default (a full recovery).
var errBadCheckpoint = errors.New("localseg: corrupt checkpoint")

// maxCheckpointSize bounds what a checkpoint read allocates.
const maxCheckpointSize = 16 << 20

// encodeCheckpoint frames lines as a checkpoint file:
//
//	shale-checkpoint <kind> <version>
//	<line>
//	...
//	crc32c <8 hex digits of the CRC-32C of every byte above>
func encodeCheckpoint(kind string, version int, lines []string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "shale-checkpoint %s %d\n", kind, version)
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "crc32c %08x\n", crc32.Checksum(b.Bytes(), castagnoli))
	return b.Bytes()
}

// decodeCheckpoint checks a checkpoint's header and checksum and returns
// its lines.
func decodeCheckpoint(kind string, version int, data []byte) ([]string, error) {
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return nil, fmt.Errorf("%w: %s: truncated", errBadCheckpoint, kind)
	}
	body := data[:len(data)-1]
	i := bytes.LastIndexByte(body, '\n')
	if i < 0 {
		return nil, fmt.Errorf("%w: %s: no checksum", errBadCheckpoint, kind)
	}
	sum, ok := strings.CutPrefix(string(body[i+1:]), "crc32c ")
	if !ok {
		return nil, fmt.Errorf("%w: %s: no checksum", errBadCheckpoint, kind)
	}
	want, err := strconv.ParseUint(sum, 16, 32)
	if err != nil || uint32(want) != crc32.Checksum(data[:i+1], castagnoli) {
		return nil, fmt.Errorf("%w: %s: checksum mismatch", errBadCheckpoint, kind)
	}
	lines := strings.Split(string(data[:i]), "\n")
	if lines[0] != fmt.Sprintf("shale-checkpoint %s %d", kind, version) {
		return nil, fmt.Errorf("%w: %s: unexpected header %q", errBadCheckpoint, kind, lines[0])
	}
	return lines[1:], nil
}

// encodeOffsetCheckpoint and decodeOffsetCheckpoint hold one offset.
func encodeOffsetCheckpoint(kind string, offset int64) []byte {
	return encodeCheckpoint(kind, 1, []string{strconv.FormatInt(offset, 10)})
}

func decodeOffsetCheckpoint(kind string, data []byte) (int64, error) {
	lines, err := decodeCheckpoint(kind, 1, data)
	if err != nil {
		return 0, err
	}
	if len(lines) != 1 {
		return 0, fmt.Errorf("%w: %s: %d lines", errBadCheckpoint, kind, len(lines))
	}
	off, err := strconv.ParseInt(lines[0], 10, 64)
	if err != nil || off < 0 {
		return 0, fmt.Errorf("%w: %s: bad offset %q", errBadCheckpoint, kind, lines[0])
	}
	return off, nil
}
