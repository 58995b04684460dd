package bench

import (
	"reflect"
	"slices"
	"testing"
)

// TestOnlyItems: BENCH_ONLY is split at commas, but a run's whole name is one
// item even when it holds a comma. Before, 'walfetch, 100ms delay' became
// "walfetch" and " 100ms delay", which also selected every other delayed run
// (--prefetch 0 among them, about 18 s a round).
func TestOnlyItems(t *testing.T) {
	runs := []string{"walfetch", "walfetch, 100ms delay", "walfetch --prefetch 0, 100ms delay", "cp from a local directory"}
	isRun := func(s string) bool { return slices.Contains(runs, s) }
	tests := []struct {
		only string
		want []onlyItem
	}{
		{"", nil},
		{"walfetch", []onlyItem{{"walfetch", true}}},
		{"walfetch,walfetch, 100ms delay", []onlyItem{{"walfetch", true}, {"walfetch, 100ms delay", true}}},
		{"walfetch, 100ms delay,cp from", []onlyItem{{"walfetch, 100ms delay", true}, {"cp from", false}}},
		{"100ms delay", []onlyItem{{"100ms delay", false}}},
		{"cp from a local directory,,walfetch", []onlyItem{{"cp from a local directory", true}, {"walfetch", true}}},
	}
	for _, tt := range tests {
		if got := onlyItems(tt.only, isRun); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("onlyItems(%q) = %+v, want %+v", tt.only, got, tt.want)
		}
	}
}
