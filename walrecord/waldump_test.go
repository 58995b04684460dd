package walrecord_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/walname"
	"github.com/walhub/walhub/walrecord"
)

// waldumpLine matches the records of interest in pg_waldump's output.
var waldumpLine = regexp.MustCompile(`tx:\s+(\d+), lsn: ([0-9A-F]+/[0-9A-F]+), prev [0-9A-F/]+, desc: ` +
	`(COMMIT|ABORT|COMMIT_PREPARED|ABORT_PREPARED|RESTORE_POINT) (?:(\d+): )?(.*)$`)

// TestAgainstWaldump makes WAL on a real PostgreSQL 15 (1 MiB segments, so
// records cross many page and segment boundaries: pgbench, restore points,
// explicit commits and rollbacks, prepared transactions, a commit record of
// several pages) and checks that the decoder finds every restore point and
// every commit and abort pg_waldump shows, at the same LSN, with the same xid,
// time and name, whatever the sizes of the chunks it is fed.
func TestAgainstWaldump(t *testing.T) {
	pg := pgtest.NewPrimary(t, "waldump", pgtest.Options{SegmentSizeMB: 1,
		Conf: []string{"max_prepared_transactions = 4", "wal_keep_size = 1GB"}})
	const segSize = 1 << 20
	start := walname.AlignDown(pg.CurrentLSN(), segSize)
	pg.PgbenchInit(1)
	wait := pg.StartPgbench(2, 4*time.Second)
	for i := range 20 {
		pg.Query(fmt.Sprintf("SELECT pg_create_restore_point('rp-%d')", i))
		pg.Query(fmt.Sprintf(`BEGIN; CREATE TABLE IF NOT EXISTS ledger (n int); INSERT INTO ledger VALUES (%d); COMMIT`, i))
		pg.Query("BEGIN; INSERT INTO ledger VALUES (-1); ROLLBACK")
		if i%5 == 0 {
			pg.Query(fmt.Sprintf("BEGIN; INSERT INTO ledger VALUES (%d); PREPARE TRANSACTION 'p%d'", i, i))
			pg.Query(fmt.Sprintf("COMMIT PREPARED 'p%d'", i))
			pg.Query(fmt.Sprintf("BEGIN; INSERT INTO ledger VALUES (%d); PREPARE TRANSACTION 'q%d'", i, i))
			pg.Query(fmt.Sprintf("ROLLBACK PREPARED 'q%d'", i))
		}
		if i == 10 {
			// A commit record with hundreds of relfilenodes and invalidations spans pages.
			var b strings.Builder
			b.WriteString("BEGIN;")
			for j := range 300 {
				fmt.Fprintf(&b, "CREATE TABLE big%d (x int);", j)
			}
			b.WriteString("COMMIT; BEGIN;")
			for j := range 300 {
				fmt.Fprintf(&b, "DROP TABLE big%d;", j)
			}
			b.WriteString("COMMIT;")
			pg.Query(b.String())
			pg.SwitchWAL()
		}
	}
	wait()
	pg.Query("SELECT pg_create_restore_point('last')")
	end := pg.SwitchWAL()
	pg.Query("CHECKPOINT")

	walDir := filepath.Join(pg.DataDir, "pg_wal")
	first := walname.SegmentOf(start, segSize)
	last := walname.SegmentOf(end, segSize)
	var segs [][]byte
	for n := first; n <= last; n++ {
		b, err := os.ReadFile(filepath.Join(walDir, walname.SegmentName(1, n, segSize)))
		if err != nil {
			t.Fatal(err)
		}
		segs = append(segs, b)
	}
	want := waldump(t, walDir, walname.SegmentName(1, first, segSize), walname.SegmentName(1, last, segSize))
	if len(want) < 100 {
		t.Fatalf("pg_waldump shows only %d events", len(want))
	}

	for _, chunk := range []int{walrecord.PageSize, segSize, 0} {
		d := walrecord.NewDecoder(segSize, start)
		rng := rand.New(rand.NewPCG(1, uint64(chunk)))
		for _, seg := range segs {
			for rest := seg; len(rest) > 0; {
				n := chunk
				if n == 0 {
					n = 1 + rng.IntN(20000)
				}
				n = min(n, len(rest))
				d.Write(rest[:n])
				rest = rest[n:]
			}
		}
		got := d.Events()
		var spanning, crossSeg int
		for _, e := range got {
			if e.End/walrecord.PageSize != e.LSN/walrecord.PageSize && e.End%walrecord.PageSize != 0 {
				spanning++
			}
			if e.End/segSize != e.LSN/segSize && e.End%segSize != 0 {
				crossSeg++
			}
		}
		t.Logf("chunks of %d: %d records, %d events, %d across pages, %d across segments", chunk, d.Records, len(got), spanning, crossSeg)
		compare(t, fmt.Sprintf("chunks of %d", chunk), got, want)
		if d.Invalid != 0 {
			t.Errorf("chunks of %d: %d invalid places in valid WAL", chunk, d.Invalid)
		}
	}
}

// compare checks that got holds exactly the events of want.
func compare(t *testing.T, what string, got []walrecord.Event, want []walrecord.Event) {
	t.Helper()
	sort.Slice(got, func(i, j int) bool { return got[i].LSN < got[j].LSN })
	if len(got) != len(want) {
		t.Errorf("%s: %d events, pg_waldump shows %d", what, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		sameTime := g.Time.Equal(w.Time)
		if w.Kind == walrecord.RestorePoint {
			// pg_waldump does not print rp_time: it must be about now.
			sameTime = time.Since(g.Time).Abs() < time.Hour
		}
		if g.Kind != w.Kind || g.LSN != w.LSN || g.XID != w.XID || !sameTime || g.Name != w.Name {
			t.Fatalf("%s: event %d is %+v, pg_waldump shows %+v", what, i, g, w)
		}
		if g.End <= g.LSN {
			t.Fatalf("%s: event %d ends at %s, before it starts", what, i, g.End)
		}
	}
}

// waldump runs pg_waldump over the segments from first to last and returns
// the restore points, commits and aborts it shows.
func waldump(t *testing.T, dir, first, last string) []walrecord.Event {
	t.Helper()
	cmd := exec.Command(pgtest.Bin(t, "pg_waldump"), "-p", dir, "-r", "Transaction", "-r", "XLOG", first, last)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	out, err := cmd.CombinedOutput()
	text := string(out)
	// pg_waldump ends with an error at the end of the valid WAL; anything else is a failure.
	if err != nil && !strings.Contains(text, "error in WAL record") && !strings.Contains(text, "invalid record length") {
		t.Fatalf("pg_waldump: %v\n%s", err, text)
	}
	var events []walrecord.Event
	kinds := map[string]walrecord.Kind{"COMMIT": walrecord.Commit, "ABORT": walrecord.Abort,
		"COMMIT_PREPARED": walrecord.CommitPrepared, "ABORT_PREPARED": walrecord.AbortPrepared,
		"RESTORE_POINT": walrecord.RestorePoint}
	for _, line := range strings.Split(text, "\n") {
		m := waldumpLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		lsn, err := walname.ParseLSN(m[2])
		if err != nil {
			t.Fatal(err)
		}
		e := walrecord.Event{Kind: kinds[m[3]], LSN: lsn}
		xid := m[1]
		if m[4] != "" {
			xid = m[4]
		}
		if e.Kind == walrecord.RestorePoint {
			e.Name = m[5]
		} else {
			ts := m[5]
			if i := strings.Index(ts, " UTC"); i >= 0 {
				ts = ts[:i]
			}
			e.Time, err = time.Parse("2006-01-02 15:04:05.000000", ts)
			if err != nil {
				t.Fatalf("pg_waldump time in %q: %v", line, err)
			}
		}
		x, err := strconv.ParseUint(xid, 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		e.XID = uint32(x)
		events = append(events, e)
	}
	return events
}
