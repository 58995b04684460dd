package retention

import (
	"fmt"
	"testing"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/walname"
)

const segSize = 16 << 20

var now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// daily makes one backup a day for n days, the newest yesterday; states
// overrides the state of backups by index (0 = oldest).
func daily(n int, states map[int]string) []catalog.Backup {
	var out []catalog.Backup
	for i := 0; i < n; i++ {
		start := now.Add(-time.Duration(n-i) * 24 * time.Hour)
		state := catalog.StateDone
		if s, ok := states[i]; ok {
			state = s
		}
		out = append(out, catalog.Backup{ID: fmt.Sprintf("b%d", i), Kind: catalog.KindBase, State: state, StartedAt: start,
			FinishedAt: start.Add(time.Hour), StartLSN: walname.LSN(uint64(i+1) * 10 * segSize)})
	}
	return out
}

// snapshots turns the backups at the given indexes into snapshots.
func snapshots(backups []catalog.Backup, idx ...int) []catalog.Backup {
	for _, i := range idx {
		backups[i].Kind = catalog.KindSnapshot
	}
	return backups
}

func kept(p Plan) string {
	s := ""
	for _, v := range p.Verdicts {
		if v.Keep {
			s += v.ID + " "
		}
	}
	return s
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name    string
		policy  config.Retention
		backups []catalog.Backup
		want    string
		walFrom walname.SegNo
	}{
		{"no policy keeps all", config.Retention{MinRedundancy: 1}, daily(3, nil), "b0 b1 b2 ", 0},
		{"redundancy 2", config.Retention{Redundancy: 2, MinRedundancy: 1}, daily(5, nil), "b3 b4 ", 40},
		{"redundancy counts only done", config.Retention{Redundancy: 2, MinRedundancy: 1},
			daily(5, map[int]string{4: catalog.StateFailed}), "b2 b3 b4 ", 30},
		{"failed kept until a newer success", config.Retention{Redundancy: 1, MinRedundancy: 1},
			daily(3, map[int]string{2: catalog.StateFailed}), "b1 b2 ", 20},
		{"running always kept", config.Retention{Redundancy: 1, MinRedundancy: 1},
			daily(3, map[int]string{2: catalog.StateRunning}), "b1 b2 ", 20},
		{"waiting for WAL kept, not counted", config.Retention{Redundancy: 1, MinRedundancy: 1},
			daily(3, map[int]string{2: catalog.StateWaitingWAL}), "b1 b2 ", 20},
		{"a snapshot is not counted toward redundancy", config.Retention{Redundancy: 1, MinRedundancy: 1},
			snapshots(daily(3, nil), 2), "b1 b2 ", 20},
		{"a snapshot older than the oldest kept backup goes", config.Retention{Redundancy: 1, MinRedundancy: 1},
			snapshots(daily(3, nil), 0), "b2 ", 30},
		{"window 2d keeps the one before it", config.Retention{Window: config.Duration{Duration: 48 * time.Hour}, MinRedundancy: 1},
			daily(5, nil), "b2 b3 b4 ", 30},
		{"min redundancy wins over a short window", config.Retention{Window: config.Duration{Duration: time.Hour}, MinRedundancy: 3},
			daily(5, nil), "b2 b3 b4 ", 30},
		{"no done backup keeps all WAL", config.Retention{Redundancy: 1, MinRedundancy: 1},
			daily(2, map[int]string{0: catalog.StateFailed, 1: catalog.StateFailed}), "b0 b1 ", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Decide(tt.policy, tt.backups, now, segSize)
			if got := kept(p); got != tt.want {
				t.Errorf("kept %q, want %q", got, tt.want)
			}
			if p.WALBefore != tt.walFrom {
				t.Errorf("WAL kept from segment %d, want %d", p.WALBefore, tt.walFrom)
			}
			for _, v := range p.Verdicts {
				if v.Why == "" {
					t.Errorf("%s has no reason", v.ID)
				}
			}
		})
	}
}
