package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/walhub/walhub/pgfile"
	"github.com/walhub/walhub/walname"
)

// BenchmarkPrefetcherFollowsRecovery measures the prefetcher's CPU per
// segment as it runs during a replay, without PostgreSQL: walfetch is run
// once per segment as PostgreSQL runs it, the file it hands over is kept
// in pg_wal under the segment's name (as a standby keeps it until a
// restartpoint), and BENCH_REPLAY_MS (default 20) passes between calls, the
// time recovery takes to replay a segment. The figure is the prefetcher's own
// cpu= at its idle exit (BENCH_SEGMENTS segments, default 120, of 1 MiB of
// random hex, which compresses about 2:1 like the replay benchmark's WAL).
// BenchmarkPrefetchSegment (walfetch/hubfetch) measures one download alone.
//
//	go test -run XXX -bench PrefetcherFollowsRecovery -benchtime 1x ./cmd/walfetch
func BenchmarkPrefetcherFollowsRecovery(b *testing.B) {
	segments, replay := 120, 20*time.Millisecond
	if n, err := strconv.Atoi(os.Getenv("BENCH_SEGMENTS")); err == nil && n > 0 {
		segments = n
	}
	if ms, err := strconv.Atoi(os.Getenv("BENCH_REPLAY_MS")); err == nil && ms >= 0 {
		replay = time.Duration(ms) * time.Millisecond
	}
	h := newTestHub(b, 0)
	r := rand.New(rand.NewPCG(1, 2))
	const hex = "0123456789abcdef"
	for i := 1; i <= segments; i++ {
		seg := make([]byte, testSegSize)
		for j := range seg {
			seg[j] = hex[r.IntN(16)]
		}
		pgfile.NewSegmentHeader(1, walname.SegNo(i), testSegSize, testSystemID).Put(seg)
		name := walname.SegmentName(1, walname.SegNo(i), testSegSize)
		if err := h.feeder.StoreSegment(context.Background(), name, seg); err != nil {
			b.Fatal(err)
		}
	}
	cpuRe := regexp.MustCompile(`msg="prefetcher exits: idle".* served=(\d+) from_spool=(\d+) cpu=(\S+)`)
	b.ResetTimer()
	for range b.N {
		dir := dataDir(b, "standby.signal", true)
		start := time.Now()
		for i := 1; i <= segments; i++ {
			name := walname.SegmentName(1, walname.SegNo(i), testSegSize)
			if code, stderr := runWalfetch(b, dir, hubArgs(h, name, "pg_wal/RECOVERYXLOG")...); code != 0 {
				b.Fatalf("%s: exit %d: %s", name, code, stderr)
			}
			if err := os.Rename(filepath.Join(dir, "pg_wal", "RECOVERYXLOG"), filepath.Join(dir, "pg_wal", name)); err != nil {
				b.Fatal(err)
			}
			time.Sleep(replay)
		}
		elapsed := time.Since(start)
		logPath := filepath.Join(dir, "pg_wal", "walfetch-spool", "prefetcher.log")
		var m []string
		deadline := time.Now().Add(30 * time.Second)
		for m == nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			log, _ := os.ReadFile(logPath)
			m = cpuRe.FindStringSubmatch(string(log))
		}
		if m == nil {
			b.Fatal("the prefetcher did not exit")
		}
		cpu, err := time.ParseDuration(m[3])
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(cpu.Microseconds())/1000/float64(segments), "prefetcher-cpu-ms/segment")
		fmt.Fprintf(os.Stderr, "%d segments of 1 MiB in %v (%v between calls): %s from the spool; prefetcher CPU %v, %v per segment\n",
			segments, elapsed.Round(time.Millisecond), replay, m[2], cpu, cpu/time.Duration(segments))
	}
}
