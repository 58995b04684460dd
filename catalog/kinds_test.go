package catalog

import "testing"

func TestWhatEachKindOfBackupIs(t *testing.T) {
	tests := []struct {
		kind, state                     string
		restorable, verifiable, counted bool
	}{
		{KindBase, StateDone, true, true, true},
		{KindBase, StateWaitingWAL, false, false, false},
		{KindBase, StateFailed, false, false, false},
		{KindBase, StateRunning, false, false, false},
		{KindSnapshot, StateDone, false, false, false},
		{"unknown", StateDone, false, false, false},
	}
	for _, tt := range tests {
		b := Backup{Kind: tt.kind, State: tt.state}
		if Restorable(b) != tt.restorable || Verifiable(b) != tt.verifiable || Counted(b) != tt.counted {
			t.Errorf("%s %s: restorable %v verifiable %v counted %v, want %v %v %v", tt.kind, tt.state,
				Restorable(b), Verifiable(b), Counted(b), tt.restorable, tt.verifiable, tt.counted)
		}
	}
}
