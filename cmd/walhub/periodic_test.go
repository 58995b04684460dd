package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestPeriodicAppliesANewInterval: a wake-up makes periodic read its
// interval again, so a reload that shortens it needs no restart; without a
// wake-up (or with the same interval) the old one holds.
func TestPeriodicAppliesANewInterval(t *testing.T) {
	for _, tc := range []struct {
		name       string
		to         time.Duration
		wake       bool
		wantRounds bool
	}{
		{"shortened and woken", 20 * time.Millisecond, true, true},
		{"shortened, not woken", 20 * time.Millisecond, false, false},
		{"woken, unchanged", time.Hour, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var interval atomic.Int64
			interval.Store(int64(time.Hour))
			var rounds atomic.Int32
			wake := make(chan struct{}, 1)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- periodic(func() time.Duration { return time.Duration(interval.Load()) }, true, wake,
					func(context.Context) { rounds.Add(1) })(ctx)
			}()
			for rounds.Load() == 0 { // the immediate round
				time.Sleep(time.Millisecond)
			}
			interval.Store(int64(tc.to))
			if tc.wake {
				wake <- struct{}{}
			}
			time.Sleep(300 * time.Millisecond)
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if got := rounds.Load() - 1; (got >= 3) != tc.wantRounds || (!tc.wantRounds && got != 0) {
				t.Errorf("%d rounds in 300 ms after the change, want many: %v", got, tc.wantRounds)
			}
		})
	}
}
