package broker

import (
	"reflect"
	"testing"
)

func TestCapGroupLag(t *testing.T) {
	lags := []groupLag{
		{"b", "t", 1, 5}, {"a", "t", 0, 1}, {"b", "t", 0, 4}, {"c", "u", 0, 7},
		{"a", "u", 0, 2}, {"b", "u", 0, 3}, {"c", "t", 0, 6},
	}
	for _, tc := range []struct {
		name    string
		limit   int
		parts   []groupLag
		topics  []groupTopicLag
		dropped int
	}{
		{name: "no bound", limit: -1, parts: lags},
		{name: "all fit", limit: 7, parts: lags},
		{
			// a (2) fits; b (3 partitions) does not, its 2 topic sums do;
			// c (2) no longer fits, nor its 2 sums.
			name: "a prefix per partition, then sums", limit: 4,
			parts:   []groupLag{{"a", "t", 0, 1}, {"a", "u", 0, 2}},
			topics:  []groupTopicLag{{"b", "t", 9}, {"b", "u", 3}},
			dropped: 5,
		},
		{
			// a fits (2), b's sums do not (2 > 1) but c... does not either;
			// nothing else fits.
			name: "sums that do not fit are left out", limit: 3,
			parts:   []groupLag{{"a", "t", 0, 1}, {"a", "u", 0, 2}},
			dropped: 5,
		},
		{
			// A later, smaller group still gets per-partition series.
			name: "greedy by name", limit: 6,
			parts:   []groupLag{{"a", "t", 0, 1}, {"a", "u", 0, 2}, {"b", "t", 0, 4}, {"b", "t", 1, 5}, {"b", "u", 0, 3}},
			topics:  nil,
			dropped: 2,
		},
		{
			name: "zero", limit: 0, dropped: 7,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts, topics, dropped := capGroupLag(lags, tc.limit)
			if !reflect.DeepEqual(parts, tc.parts) || !reflect.DeepEqual(topics, tc.topics) || dropped != tc.dropped {
				t.Fatalf("got %v %v %d, want %v %v %d", parts, topics, dropped, tc.parts, tc.topics, tc.dropped)
			}
			if tc.limit >= 0 && len(parts)+len(topics) > tc.limit {
				t.Fatalf("%d series over the limit %d", len(parts)+len(topics), tc.limit)
			}
		})
	}
}
