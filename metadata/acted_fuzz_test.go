package metadata

import (
	"encoding/json"
	"errors"
	"maps"
	"testing"
)

// FuzzDecodeActedIncarnations: the controller's record of the broker
// incarnations it acted on is read back from etcd; whatever bytes are
// there, decoding returns a map or ErrUnreadable, never panics, and a
// decoded map encodes to bytes that decode to the same map.
func FuzzDecodeActedIncarnations(f *testing.F) {
	for _, s := range []string{`{"1":12,"2":40,"3":41}`, `{}`, `null`, `[]`, `{"x":1}`, `{"1":-1}`, `{"2147483648":1}`, ``, `{"1":1e30}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		acted, err := decodeActedIncarnations(b)
		if err != nil {
			if !errors.Is(err, ErrUnreadable) {
				t.Fatalf("error %v is not ErrUnreadable", err)
			}
			return
		}
		again, err := json.Marshal(acted)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeActedIncarnations(again)
		if err != nil || !maps.Equal(back, acted) {
			t.Fatalf("%s decoded to %v, re-encoded as %s, decoded to %v (%v)", b, acted, again, back, err)
		}
	})
}
