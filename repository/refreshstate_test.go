package repository

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/walhub/walhub/storage"
)

// TestRecordRefresh: a failure keeps the last success and counts, a
// success clears the error and the count; the state survives a write and a
// read, and none recorded reads as os.ErrNotExist.
func TestRecordRefresh(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 22, 0, 0, 0, time.UTC)
	boom := errors.New("cannot reach the bucket")
	work, err := storage.NewWorkArea(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadRefreshState(work); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("no state recorded: %v, want ErrNotExist", err)
	}
	var st RefreshState
	for i, step := range []struct {
		err                      error
		wantSuccess, wantErrorAt time.Time
		wantError                string
		wantFailures             int
	}{
		{err: boom, wantErrorAt: t0, wantError: boom.Error(), wantFailures: 1},
		{wantSuccess: t0.Add(time.Minute), wantErrorAt: t0},
		{err: boom, wantSuccess: t0.Add(time.Minute), wantErrorAt: t0.Add(2 * time.Minute), wantError: boom.Error(), wantFailures: 1},
		{err: boom, wantSuccess: t0.Add(time.Minute), wantErrorAt: t0.Add(3 * time.Minute), wantError: boom.Error(), wantFailures: 2},
		{wantSuccess: t0.Add(4 * time.Minute), wantErrorAt: t0.Add(3 * time.Minute)},
	} {
		now := t0.Add(time.Duration(i) * time.Minute)
		st = RecordRefresh(st, now, RefreshReport{SegmentsAdded: i}, step.err)
		if err := WriteRefreshState(work, st); err != nil {
			t.Fatal(err)
		}
		got, err := ReadRefreshState(work)
		if err != nil {
			t.Fatal(err)
		}
		if !got.LastAttemptAt.Equal(now) || !got.LastSuccessAt.Equal(step.wantSuccess) || !got.LastErrorAt.Equal(step.wantErrorAt) ||
			got.LastError != step.wantError || got.Failures != step.wantFailures {
			t.Fatalf("step %d: %+v, want success %v, error %q at %v, %d failures", i, got, step.wantSuccess, step.wantError, step.wantErrorAt, step.wantFailures)
		}
		if step.err == nil && got.LastReport.SegmentsAdded != i {
			t.Fatalf("step %d: report %+v", i, got.LastReport)
		}
	}
}
