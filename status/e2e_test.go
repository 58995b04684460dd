package status

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/walname"
)

// waitDoc rebuilds the document until cond holds, failing after timeout.
func waitDoc(t *testing.T, src Source, timeout time.Duration, what string, cond func(*Document) bool) *Document {
	t.Helper()
	var doc *Document
	pgtest.WaitFor(t, timeout, what, func() bool {
		doc = build(t, src)
		return cond(doc)
	})
	return doc
}

func client(doc *Document, app string) (Client, bool) {
	for _, c := range doc.Clients {
		if c.ApplicationName == app {
			return c, true
		}
	}
	return Client{}, false
}

func TestReplicationClientsShowSyncStateStageAndReplayLag(t *testing.T) {
	t.Parallel()
	p := pgtest.NewPrimary(t, "primary", pgtest.Options{SegmentSizeMB: 1})
	for _, s := range []string{"sync1", "async1"} {
		p.CreateSlot(s)
	}
	syncStandby := p.NewStandby("sync1", pgtest.StandbyOptions{Slot: "sync1"})
	asyncStandby := p.NewStandby("async1", pgtest.StandbyOptions{Slot: "async1"})
	p.Query("ALTER SYSTEM SET synchronous_standby_names = 'sync1'")
	p.Query("SELECT pg_reload_conf()")
	src := newSource(t, t.TempDir(), p.ConnString(""))
	startReceiver(t, src)

	p.Query("CREATE TABLE t AS SELECT generate_series(1, 10000) AS x")
	lsn := p.CurrentLSN()
	syncStandby.WaitReplay(lsn, 120*time.Second)
	asyncStandby.WaitReplay(lsn, 120*time.Second)

	doc := waitDoc(t, src, 120*time.Second, "sync1 sync at 5/5, async1 async, the hub's streamer at 3/3", func(d *Document) bool {
		s, ok1 := client(d, "sync1")
		a, ok2 := client(d, "async1")
		h, ok3 := client(d, "walhub_main")
		return ok1 && ok2 && ok3 && s.SyncState == "sync" && s.SyncStage == "5/5 Hot standby (max)" &&
			a.SyncState == "async" && a.SyncStageMax == 5 && h.SyncStage == "3/3 Remote write"
	})
	s, _ := client(doc, "sync1")
	a, _ := client(doc, "async1")
	h, _ := client(doc, "walhub_main")
	if s.SyncPriority != 1 || s.Kind != "standby" || s.SlotName != "sync1" || s.Walhub {
		t.Errorf("sync1 = %+v", s)
	}
	if a.SyncPriority != 0 || a.Kind != "standby" || a.SlotName != "async1" {
		t.Errorf("async1 = %+v", a)
	}
	if !h.Walhub || h.Kind != "wal_streamer" || h.SlotName != "walhub_main" || h.ReplayLSN != nil || h.ReplayLagBytes != nil {
		t.Errorf("hub's streamer = %+v", h)
	}
	if !doc.Slot.Exists || !doc.Slot.Active || doc.Slot.ActivePID != h.PID || doc.Slot.WALStatus == "" {
		t.Errorf("slot = %+v", doc.Slot)
	}
	if rc := doc.Receiver; !rc.Running || rc.State != "streaming" || rc.FlushedLSN < lsn {
		t.Errorf("receiver = %+v", rc)
	}
	var text bytes.Buffer
	if err := WriteText(&text, doc); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"#1 Sync standby", "Async standby", "Async WAL streamer (this hub)", "Sync stage      : 5/5 Hot standby (max)"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}

	// Status of a standby: read from pg_last_wal_receive_lsn and the checkpoint's timeline.
	standbyDoc := build(t, newSource(t, t.TempDir(), syncStandby.ConnString("")))
	if pg := standbyDoc.Postgres; !pg.Reachable || pg.Error != "" || !pg.InRecovery || pg.TimeLine != 1 || pg.CurrentLSN < lsn {
		t.Errorf("status of the standby: postgres = %+v", pg)
	}

	// Paused replay: async1 keeps receiving and flushing but its replay lag grows.
	asyncStandby.Query("SELECT pg_wal_replay_pause()")
	p.GenerateWAL(2)
	doc = waitDoc(t, src, 120*time.Second, "async1 flushed but not replayed (4/5 2-safe)", func(d *Document) bool {
		a, ok := client(d, "async1")
		return ok && a.SyncStage == "4/5 2-safe" && a.ReplayLagBytes != nil && *a.ReplayLagBytes > 0
	})
	a, _ = client(doc, "async1")
	first := *a.ReplayLagBytes
	p.GenerateWAL(2)
	doc = waitDoc(t, src, 120*time.Second, "async1's replay lag to grow", func(d *Document) bool {
		a, ok := client(d, "async1")
		return ok && a.ReplayLagBytes != nil && *a.ReplayLagBytes > first+(1<<20)
	})
	a, _ = client(doc, "async1")
	s, _ = client(doc, "sync1")
	t.Logf("async1 replay lag grew from %d to %d bytes; sync1 at %s", first, *a.ReplayLagBytes, s.SyncStage)
	if a.ReplayLagSeconds == nil || *a.ReplayLagSeconds <= 0 {
		t.Errorf("async1 replay_lag_seconds = %v, want > 0 while paused", a.ReplayLagSeconds)
	}
	asyncStandby.Query("SELECT pg_wal_replay_resume()")
}

func TestRemovedSlotAndStaleWALAreReportedWithHints(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := pgtest.NewPrimary(t, "primary", pgtest.Options{SegmentSizeMB: 1})
	p.CreateSlot("walhub_main")
	repo := t.TempDir()
	src := newSource(t, repo, p.ConnString(""))
	systemID := p.Query("SELECT system_identifier FROM pg_control_system()")
	srv, _ := src.Catalog.EnsureServer(ctx, "main")
	if err := src.Catalog.BindIdentity(ctx, srv.ID, systemID, 1<<20); err != nil {
		t.Fatal(err)
	}
	// The hub stored segments 1 and 2 an hour ago, then nothing.
	var segs []catalog.Segment
	for n := walname.SegNo(1); n <= 2; n++ {
		name := walname.SegmentName(1, n, 1<<20)
		segs = append(segs, catalog.Segment{ServerID: srv.ID, TimeLine: 1, SegNo: n, Name: name, Size: 1 << 20, StoredSize: 1000,
			Compression: "zstd", Checksum: "crc32c:0", StoredPath: "main/wal/x/" + name, ReceivedAt: time.Now().Add(-time.Hour)})
	}
	if err := src.Catalog.AddSegments(ctx, segs); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		p.GenerateWAL(1)
		p.SwitchWAL()
	}
	if doc := build(t, src); !doc.Slot.Exists || doc.Slot.Active {
		t.Fatalf("slot before the drop = %+v", doc.Slot)
	}
	p.Query("SELECT pg_drop_replication_slot('walhub_main')")

	doc, results, err := src.Check(ctx, "main", DefaultThresholds)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, message, hint string }{
		{"replication slot", "does not exist", "creates it"},
		{"last wal age", "newer segment", "receiver"},
		{"receiver", "no receiver has run", "walhub serve"},
		{"last backup age", "no backup", "walhub backup --server main"},
		{"minimum redundancy", "0 backup(s), at least 1", "walhub backup"},
	} {
		r := result(t, results, c.name)
		if r.Level != Critical || !strings.Contains(r.Message, c.message) || !strings.Contains(r.Hint, c.hint) {
			t.Errorf("%s = %s %q (hint %q), want CRITICAL with %q and hint %q", c.name, r.Level, r.Message, r.Hint, c.message, c.hint)
		}
	}
	if r := result(t, results, "system id"); r.Level != OK {
		t.Errorf("system id = %+v", r)
	}
	// The same server under another cluster's identity.
	doc.WAL.SystemID = "1234"
	if r := result(t, Evaluate(doc, &src.Config.Servers[0], Probe{}, DefaultThresholds), "system id"); r.Level != Critical || r.Hint == "" {
		t.Errorf("system id against another cluster = %+v", r)
	}
	var out bytes.Buffer
	if err := WriteNagios(&out, results, false); err != nil || !strings.HasPrefix(out.String(), "WALHUB CRITICAL - ") ||
		!strings.Contains(out.String(), "'wal_age'=") {
		t.Errorf("nagios: %v %s", err, out.String())
	}
}
