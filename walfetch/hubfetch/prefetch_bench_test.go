package hubfetch

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/hub/client"
	"github.com/walhub/walhub/pgfile"
	"github.com/walhub/walhub/walfetch"
	"github.com/walhub/walhub/walname"
)

// BenchmarkPrefetchSegment measures the prefetcher's own work per segment:
// download (zstd, as the hub stores it), decompress, CRC-32C, header check,
// write into the spool and rename. The hub is a minimal in-process server
// sending prepared bytes, so its share is small; the figure reported is the
// process CPU per segment, the prefetcher log's cpu= divided by segments.
// It is one download's cost, not the prefetcher's during a replay: each file
// is removed before the next download, so the kernel writes into the same
// warm page-cache pages every time (a new 1 MiB file in pages the machine
// has not touched lately costs 1.2 ms more of system time on the 2-core VM
// the figures come from), and it leaves out the process's start, its first
// window of parallel downloads, the peeks and the wake-ups on walfetch's
// datagrams. BenchmarkPrefetcherFollowsRecovery (cmd/walfetch) measures that.
//
//	go test -run XXX -bench PrefetchSegment -benchtime 40x ./walfetch/hubfetch
func BenchmarkPrefetchSegment(b *testing.B) {
	const systemID = 7300000000000000042
	segSize := uint64(16 << 20)
	if mb, err := strconv.Atoi(os.Getenv("BENCH_SEGMENT_MB")); err == nil && mb > 0 {
		segSize = uint64(mb) << 20
	}
	// WAL-like content that compresses about 2:1, like the replay benchmark's.
	const segments = 4
	r := rand.New(rand.NewPCG(1, 2))
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	stored := map[string][]byte{}
	sums := map[string]string{}
	var names []string
	for i := range segments {
		seg := make([]byte, segSize)
		const hex = "0123456789abcdef"
		for j := range seg {
			seg[j] = hex[r.IntN(16)]
		}
		pgfile.NewSegmentHeader(1, walname.SegNo(i+1), segSize, systemID).Put(seg)
		name := walname.SegmentName(1, walname.SegNo(i+1), segSize)
		names = append(names, name)
		stored[name] = enc.EncodeAll(seg, nil)
		sums[name] = checksum.Of(seg)
	}
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		h := w.Header()
		h.Set(api.HeaderChecksum, sums[name])
		h.Set(api.HeaderSize, strconv.FormatUint(segSize, 10))
		h.Set(api.HeaderSystemID, strconv.FormatUint(systemID, 10))
		h.Set(api.HeaderSegmentSize, strconv.FormatUint(segSize, 10))
		h.Set("Content-Encoding", "zstd")
		w.Write(stored[name])
	}))
	defer hub.Close()
	c, err := client.New(client.Options{URL: hub.URL, Server: "main", MaxConns: 2})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	p := &prefetcher{s: walfetch.Settings{Timeout: 30 * time.Second}, sp: &walfetch.Spool{Dir: dir, Root: dir, SystemID: systemID},
		c: c, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		inflight: map[string]bool{}, failed: map[string]time.Time{}, fetched: map[string]bool{}}
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.SetBytes(int64(segSize))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := names[i%segments]
		p.fetch(download{seg: api.PeekSegment{Name: name, Checksum: sums[name]}, segSize: segSize})
		if _, err := os.Stat(p.sp.Path(name)); err != nil {
			b.Fatalf("%s not in the spool: %v", name, err)
		}
		os.Remove(p.sp.Path(name))
	}
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/segment")
	fmt.Fprintf(os.Stderr, "%d segments of %d MiB: %v CPU per segment (prefetcher and in-process hub)\n", b.N, segSize>>20, cpu/time.Duration(b.N))
}
