package recordbatch

// recordInMemory is record for a body held whole in buf (r == nil): the
// same checks, on the slice itself. Varints of one and two bytes (nearly
// all of a record's: lengths and deltas up to 8191) are decoded in line,
// longer ones by zigzagAt; the Go inliner would not inline a helper
// holding these paths, and the call cost a tenth of the walk.
func (w *walker) recordInMemory() (int32, int64, bool) {
	b, p := w.buf, w.pos
	var v int64
	var n int

	// The length prefix may run to the end of the body.
	if p < len(b) && b[p] < 0x80 {
		v, n = int64(b[p]>>1)^-int64(b[p]&1), 1
	} else if p+1 < len(b) && b[p+1] < 0x80 {
		ux := uint64(b[p]&0x7f) | uint64(b[p+1])<<7
		v, n = int64(ux>>1)^-int64(ux&1), 2
	} else {
		v, n = zigzagAt(b, p, 10)
	}
	if n <= 0 || v < 0 || v > 1<<31-1 {
		return 0, 0, false
	}
	p += n
	rem := int(v)
	// attributes
	if rem < 1 || p >= len(b) {
		return 0, 0, false
	}
	p, rem = p+1, rem-1
	// timestamp delta
	if rem > 0 && p < len(b) && b[p] < 0x80 {
		v, n = int64(b[p]>>1)^-int64(b[p]&1), 1
	} else if rem > 1 && p+1 < len(b) && b[p+1] < 0x80 {
		ux := uint64(b[p]&0x7f) | uint64(b[p+1])<<7
		v, n = int64(ux>>1)^-int64(ux&1), 2
	} else {
		v, n = zigzagAt(b, p, rem)
	}
	if n <= 0 {
		return 0, 0, false
	}
	p, rem = p+n, rem-n
	td := v
	// offset delta
	if rem > 0 && p < len(b) && b[p] < 0x80 {
		v, n = int64(b[p]>>1)^-int64(b[p]&1), 1
	} else if rem > 1 && p+1 < len(b) && b[p+1] < 0x80 {
		ux := uint64(b[p]&0x7f) | uint64(b[p+1])<<7
		v, n = int64(ux>>1)^-int64(ux&1), 2
	} else {
		v, n = zigzagAt(b, p, rem)
	}
	if n <= 0 || v < -1<<31 || v > 1<<31-1 {
		return 0, 0, false
	}
	p, rem = p+n, rem-n
	od := int32(v)
	// key, value, header count
	for f := 0; f < 3; f++ {
		if rem > 0 && p < len(b) && b[p] < 0x80 {
			v, n = int64(b[p]>>1)^-int64(b[p]&1), 1
		} else if rem > 1 && p+1 < len(b) && b[p+1] < 0x80 {
			ux := uint64(b[p]&0x7f) | uint64(b[p+1])<<7
			v, n = int64(ux>>1)^-int64(ux&1), 2
		} else {
			v, n = zigzagAt(b, p, rem)
		}
		if n <= 0 || v < -1 || v > 1<<31-1 {
			return 0, 0, false
		}
		p, rem = p+n, rem-n
		if v > int64(rem) || (f == 2 && v < 0) {
			return 0, 0, false
		}
		if f == 2 {
			break // v headers follow
		}
		if v > 0 {
			if int(v) > len(b)-p {
				return 0, 0, false
			}
			p, rem = p+int(v), rem-int(v)
		}
	}
	for h := v; h > 0; h-- {
		// A null header key is refused, as Kafka does; a null value
		// is not.
		for f := 0; f < 2; f++ {
			if rem > 0 && p < len(b) && b[p] < 0x80 {
				v, n = int64(b[p]>>1)^-int64(b[p]&1), 1
			} else if rem > 1 && p+1 < len(b) && b[p+1] < 0x80 {
				ux := uint64(b[p]&0x7f) | uint64(b[p+1])<<7
				v, n = int64(ux>>1)^-int64(ux&1), 2
			} else {
				v, n = zigzagAt(b, p, rem)
			}
			if n <= 0 || v < -int64(f) || v > 1<<31-1 { // key: 0 or more; value: -1 (null) or more
				return 0, 0, false
			}
			p, rem = p+n, rem-n
			if v > int64(rem) {
				return 0, 0, false
			}
			if v > 0 {
				if int(v) > len(b)-p {
					return 0, 0, false
				}
				p, rem = p+int(v), rem-int(v)
			}
		}
	}
	w.pos = p
	return od, td, rem == 0
}

// zigzagAt decodes the zigzag varint at b[p:] from at most limit bytes (n
// <= 0: too short or overflowing).
func zigzagAt(b []byte, p, limit int) (int64, int) {
	b = b[p:]
	if len(b) > limit {
		b = b[:max(limit, 0)]
	}
	if len(b) >= 2 && b[0] >= 0x80 && b[1] < 0x80 { // lengths of 64 to 8191
		ux := uint64(b[0]&0x7f) | uint64(b[1])<<7
		return int64(ux>>1) ^ -int64(ux&1), 2
	}
	ux, n := uvarint(b)
	return int64(ux>>1) ^ -int64(ux&1), n
}
