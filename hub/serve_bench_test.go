package hub

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/test/walfeed"
	"github.com/walhub/walhub/walname"
)

// BenchmarkServeSegment measures the hub's CPU per segment (16 MiB, or
// BENCH_SEGMENT_MB) served as stored (zstd, what walfetch asks for) over a
// real TCP connection: the process CPU per segment, the hub's share and a
// client that only reads the bytes (no decoding) to io.Discard.
//
//	go test -run XXX -bench ServeSegment -benchtime 100x ./hub
func BenchmarkServeSegment(b *testing.B) {
	big := 16 << 20
	if mb, err := strconv.Atoi(os.Getenv("BENCH_SEGMENT_MB")); err == nil && mb > 0 {
		big = mb << 20
	}
	ctx := context.Background()
	dir := b.TempDir()
	repo, err := repository.OpenLocal(ctx, dir)
	if err != nil {
		b.Fatal(err)
	}
	defer repo.Close()
	feeder, err := walfeed.New(ctx, repo, "main", "7300000000000000001", uint64(big), "zstd")
	if err != nil {
		b.Fatal(err)
	}
	// Hex digits, compressing about 2:1 like the replay benchmark's WAL.
	const segments = 4
	r := rand.New(rand.NewPCG(1, 2))
	var names []string
	for i := range segments {
		seg := make([]byte, big)
		for j := range seg {
			seg[j] = "0123456789abcdef"[r.IntN(16)]
		}
		name := walname.SegmentName(1, walname.SegNo(i+1), uint64(big))
		if err := feeder.StoreSegment(ctx, name, seg); err != nil {
			b.Fatal(err)
		}
		names = append(names, name)
	}
	f := &fixture{dir: dir, repo: repo}
	addr := f.running(b, defaultLimits, "")
	tr := &http.Transport{DisableCompression: true, ReadBufferSize: 256 << 10}
	defer tr.CloseIdleConnections()
	get := func(name string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+api.WALPath("main", name), nil)
		req.Header.Set("Authorization", "Bearer "+readToken)
		req.Header.Set("Accept-Encoding", "zstd")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "zstd" {
			b.Fatalf("GET %s: %s, Content-Encoding %q", name, resp.Status, resp.Header.Get("Content-Encoding"))
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			b.Fatal(err)
		}
	}
	get(names[0])
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.SetBytes(int64(big))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		get(names[i%segments])
	}
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/segment")
	fmt.Fprintf(os.Stderr, "%d segments of %d MiB served: %v CPU per segment (hub and a reading client)\n", b.N, big>>20, cpu/time.Duration(b.N))
}
