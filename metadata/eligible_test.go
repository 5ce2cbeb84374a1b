package metadata

import (
	"slices"
	"testing"
)

// SetISR keeps the eligible leader replicas (KIP-966): members that leave
// an ISR smaller than min.insync.replicas join them, except the lost;
// members back in the ISR, no longer replicas, or lost leave them; an ISR
// back to min.insync.replicas has none, and ones left over from a larger
// min.insync.replicas are forgotten.
func TestSetISRKeepsTheEligibleLeaderReplicas(t *testing.T) {
	cases := []struct {
		name         string
		isr, elig    []int32
		next         []int32
		minISR       int32
		lost         []int32
		wantEligible []int32
	}{
		{"a shrink that keeps min.insync.replicas", []int32{1, 2, 3}, nil, []int32{1, 2}, 2, nil, nil},
		{"a shrink below min.insync.replicas", []int32{1, 2}, nil, []int32{1}, 2, nil, []int32{2}},
		{"a further shrink keeps the earlier ones", []int32{1, 3}, []int32{2}, []int32{3}, 3, nil, []int32{2, 1}},
		{"a lost member is not eligible", []int32{1, 2}, nil, []int32{2}, 2, []int32{1}, nil},
		{"a lost eligible member stops being one", []int32{1}, []int32{2, 3}, []int32{1}, 2, []int32{3}, []int32{2}},
		{"a member back in the ISR leaves them", []int32{1}, []int32{2, 3}, []int32{1, 2}, 3, nil, []int32{3}},
		{"back to min.insync.replicas", []int32{1}, []int32{2}, []int32{1, 3}, 2, nil, nil},
		{"min.insync.replicas 1 has none", []int32{1, 2}, nil, []int32{1}, 1, nil, nil},
		{"no longer a replica", []int32{1}, []int32{9}, []int32{1}, 2, nil, nil},
		// min.insync.replicas came down from 3 to the ISR's 2 after 3
		// left: the high watermark may have moved past it since.
		{"left over from a larger min.insync.replicas", []int32{1, 2}, []int32{3}, []int32{1}, 2, nil, []int32{2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := Partition{Replicas: []int32{1, 2, 3}, ISR: tc.isr, Eligible: tc.elig}
			p.SetISR(tc.next, tc.minISR, tc.lost...)
			if !slices.Equal(p.ISR, tc.next) || !slices.Equal(p.Eligible, tc.wantEligible) {
				t.Fatalf("ISR %v eligible %v, want ISR %v eligible %v", p.ISR, p.Eligible, tc.next, tc.wantEligible)
			}
			if got, want := p.Counted(), append(slices.Clone(tc.next), tc.wantEligible...); !slices.Equal(got, want) {
				t.Fatalf("counted %v, want %v", got, want)
			}
		})
	}
}
