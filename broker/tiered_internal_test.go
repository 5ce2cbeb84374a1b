package broker

import (
	"testing"

	"github.com/shale-log/shale/localseg"
)

// TestEndOffsetForEpochSpansRemoteAndLocalEpochs: OffsetForLeaderEpoch for
// an epoch that wrote only what the bucket holds ends where the next epoch
// (remote or local) starts, not at the local log start.
func TestEndOffsetForEpochSpansRemoteAndLocalEpochs(t *testing.T) {
	all := []localseg.EpochEntry{{Epoch: 0, StartOffset: 0}, {Epoch: 2, StartOffset: 1000}, {Epoch: 5, StartOffset: 3000}}
	for _, tc := range []struct {
		epoch     int32
		wantEpoch int32
		wantEnd   int64
		ok        bool
	}{
		{0, 0, 1000, true},
		{1, 0, 1000, true}, // never led: the epoch before it
		{2, 2, 3000, true},
		{4, 2, 3000, true},
		{5, 5, 4000, true}, // the latest: the log end
		{6, -1, -1, false},
		{-1, -1, -1, false},
	} {
		e, end, ok := replicationEndOffset(all, tc.epoch, 4000)
		if e != tc.wantEpoch || end != tc.wantEnd || ok != tc.ok {
			t.Errorf("epoch %d: got %d, %d, %v; want %d, %d, %v", tc.epoch, e, end, ok, tc.wantEpoch, tc.wantEnd, tc.ok)
		}
	}
}
