package recordbatch

// recordInMemory is record for a body held whole in buf (r == nil): the
// same checks, on the slice itself (recordAt).
func (w *walker) recordInMemory() (int32, int64, bool) {
	od, td, next, ok := recordAt(w.buf, w.pos)
	if next >= 0 {
		w.pos = next
	}
	return od, td, ok
}

// recordAt steps over the record at b[p:], returning its offset and
// timestamp deltas and where the next record begins (-1 when the record
// is malformed or cut short; ok is false then, and also when the record
// was stepped over but its fields do not fill its length exactly).
//
// A record lying whole in b whose varints all take one or two bytes
// (nearly every record: lengths and deltas up to 8191) is walked on its
// own slice, where its length bounds every field and the varints need no
// range checks; anything else, and any record that path would refuse, is
// left to recordAtChecked, so that what is refused, and how, is decided by
// one walk alone.
func recordAt(b []byte, p int) (od int32, td int64, next int, ok bool) {
	// The length prefix.
	var l, n int
	if p < len(b) && b[p] < 0x80 {
		l, n = int(b[p]>>1)^-int(b[p]&1), 1
	} else if p+1 < len(b) && b[p+1] < 0x80 {
		ux := int(b[p]&0x7f) | int(b[p+1])<<7
		l, n = ux>>1^-(ux&1), 2
	} else {
		return recordAtChecked(b, p)
	}
	if l < 1 || l > len(b)-p-n {
		return recordAtChecked(b, p)
	}
	r := b[p+n : p+n+l]
	q := 1 // past the attributes
	var v int
	// Timestamp delta and offset delta.
	if q < len(r) && r[q] < 0x80 {
		td = int64(r[q]>>1) ^ -int64(r[q]&1)
		q++
	} else if q+1 < len(r) && r[q+1] < 0x80 {
		ux := int64(r[q]&0x7f) | int64(r[q+1])<<7
		td = ux>>1 ^ -(ux & 1)
		q += 2
	} else {
		return recordAtChecked(b, p)
	}
	if q < len(r) && r[q] < 0x80 {
		od = int32(r[q]>>1) ^ -int32(r[q]&1)
		q++
	} else if q+1 < len(r) && r[q+1] < 0x80 {
		ux := int32(r[q]&0x7f) | int32(r[q+1])<<7
		od = ux>>1 ^ -(ux & 1)
		q += 2
	} else {
		return recordAtChecked(b, p)
	}
	// Key, value (each -1, null, or a length) and header count.
	for f := 0; f < 3; f++ {
		if q < len(r) && r[q] < 0x80 {
			v = int(r[q]>>1) ^ -int(r[q]&1)
			q++
		} else if q+1 < len(r) && r[q+1] < 0x80 {
			ux := int(r[q]&0x7f) | int(r[q+1])<<7
			v = ux>>1 ^ -(ux & 1)
			q += 2
		} else {
			return recordAtChecked(b, p)
		}
		if f < 2 {
			if v < -1 || v > len(r)-q {
				return recordAtChecked(b, p)
			}
			if v > 0 {
				q += v
			}
		}
	}
	// v headers: a key (never null, as Kafka requires) and a value each.
	if v < 0 || v > len(r)-q {
		return recordAtChecked(b, p)
	}
	for h := v; h > 0; h-- {
		for f := 0; f < 2; f++ {
			if q < len(r) && r[q] < 0x80 {
				v = int(r[q]>>1) ^ -int(r[q]&1)
				q++
			} else if q+1 < len(r) && r[q+1] < 0x80 {
				ux := int(r[q]&0x7f) | int(r[q+1])<<7
				v = ux>>1 ^ -(ux & 1)
				q += 2
			} else {
				return recordAtChecked(b, p)
			}
			if v < -f || v > len(r)-q {
				return recordAtChecked(b, p)
			}
			if v > 0 {
				q += v
			}
		}
	}
	if q != len(r) {
		return recordAtChecked(b, p)
	}
	return od, td, p + n + l, true
}

// recordAtChecked is recordAt for any record, every field checked.
// Varints of one and two bytes are decoded in line, longer ones by
// zigzagAt; the Go inliner would not inline a helper holding these paths,
// and the call cost a tenth of the walk.
func recordAtChecked(b []byte, p int) (od int32, td int64, next int, ok bool) {
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
		return 0, 0, -1, false
	}
	p += n
	rem := int(v)
	// attributes
	if rem < 1 || p >= len(b) {
		return 0, 0, -1, false
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
		return 0, 0, -1, false
	}
	p, rem = p+n, rem-n
	td = v
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
		return 0, 0, -1, false
	}
	p, rem = p+n, rem-n
	od = int32(v)
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
			return 0, 0, -1, false
		}
		p, rem = p+n, rem-n
		if v > int64(rem) || (f == 2 && v < 0) {
			return 0, 0, -1, false
		}
		if f == 2 {
			break // v headers follow
		}
		if v > 0 {
			if int(v) > len(b)-p {
				return 0, 0, -1, false
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
				return 0, 0, -1, false
			}
			p, rem = p+n, rem-n
			if v > int64(rem) {
				return 0, 0, -1, false
			}
			if v > 0 {
				if int(v) > len(b)-p {
					return 0, 0, -1, false
				}
				p, rem = p+int(v), rem-int(v)
			}
		}
	}
	return od, td, p, rem == 0
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

// nullKeyAt reports whether the record at b[p:], which recordAt accepted,
// has a null key (key length -1). The varints before the key's length
// (the record's length, then past the attributes the two deltas) are
// well formed there: each is stepped over to its last byte, the first
// below 0x80.
func nullKeyAt(b []byte, p int) bool {
	for f := 0; f < 3; f++ {
		for p < len(b) && b[p] >= 0x80 {
			p++
		}
		p++
		if f == 0 {
			p++ // the attributes
		}
	}
	if p >= len(b) {
		return false
	}
	if c := b[p]; c < 0x80 {
		return c == 1 // zigzag -1
	}
	v, n := zigzagAt(b, p, 10) // a length written in more bytes than it needs
	return n > 0 && v == -1
}
