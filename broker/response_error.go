package broker

import (
	"reflect"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// responseErrorCode is a response's first non-zero error code, top level
// first, then per topic, partition or group in order (0: none), for the
// requests metric. The fields to look at are found once per response type
// by reflection; a lookup walks only them.
func responseErrorCode(resp kmsg.Response) int16 {
	if resp == nil {
		return 0
	}
	switch r := resp.(type) {
	case *kmsg.ProduceResponse:
		for i := range r.Topics {
			for j := range r.Topics[i].Partitions {
				if c := r.Topics[i].Partitions[j].ErrorCode; c != 0 {
					return c
				}
			}
		}
		return 0
	case *kmsg.FetchResponse:
		if r.ErrorCode != 0 {
			return r.ErrorCode
		}
		for i := range r.Topics {
			for j := range r.Topics[i].Partitions {
				if c := r.Topics[i].Partitions[j].ErrorCode; c != 0 {
					return c
				}
			}
		}
		return 0
	}
	v := reflect.ValueOf(resp)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return 0
	}
	v = v.Elem()
	return errorPlanFor(v.Type()).find(v)
}

// errorPlan lists where a struct type keeps error codes: its own
// ErrorCode field, and its slices of structs that (transitively) do.
type errorPlan struct {
	code   int // index of an int16 ErrorCode field, -1 when none
	slices []slicePlan
}

type slicePlan struct {
	field int
	elem  *errorPlan
}

var errorPlans sync.Map // reflect.Type -> *errorPlan

func errorPlanFor(t reflect.Type) *errorPlan {
	if p, ok := errorPlans.Load(t); ok {
		return p.(*errorPlan)
	}
	p := buildErrorPlan(t, 0)
	errorPlans.Store(t, p)
	return p
}

// buildErrorPlan returns nil when t holds no error code. Response types
// nest a few levels; depth only guards against a recursive type.
func buildErrorPlan(t reflect.Type, depth int) *errorPlan {
	if t.Kind() != reflect.Struct || depth > 6 {
		return nil
	}
	p := &errorPlan{code: -1}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		switch {
		case f.Name == "ErrorCode" && f.Type.Kind() == reflect.Int16:
			p.code = i
		case f.Type.Kind() == reflect.Slice:
			if ep := buildErrorPlan(f.Type.Elem(), depth+1); ep != nil {
				p.slices = append(p.slices, slicePlan{field: i, elem: ep})
			}
		}
	}
	if p.code < 0 && len(p.slices) == 0 {
		return nil
	}
	return p
}

func (p *errorPlan) find(v reflect.Value) int16 {
	if p == nil {
		return 0
	}
	if p.code >= 0 {
		if c := int16(v.Field(p.code).Int()); c != 0 {
			return c
		}
	}
	for _, sp := range p.slices {
		s := v.Field(sp.field)
		for i := 0; i < s.Len(); i++ {
			if c := sp.elem.find(s.Index(i)); c != 0 {
				return c
			}
		}
	}
	return 0
}
