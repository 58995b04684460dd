package stream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
)

// writeCompletePartial writes a whole segment as a .partial, as walWriter leaves it.
func writeCompletePartial(t *testing.T, repo *repository.Repository, segNo walname.SegNo) (completedSegment, []byte) {
	t.Helper()
	name := walname.SegmentName(1, segNo, testSegSize)
	path := repo.Work.PartialFile("main", name)
	os.MkdirAll(filepath.Dir(path), 0o750)
	data := pattern(walname.SegmentStart(segNo, testSegSize), testSegSize)
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
	return completedSegment{TimeLine: 1, SegNo: segNo, Name: name, Partial: path}, data
}

func TestSegmentStoreStoresThenCatalogsThenRemovesPartial(t *testing.T) {
	for _, compression := range []string{"zstd", "none"} {
		t.Run(compression, func(t *testing.T) {
			ctx := context.Background()
			repo, cat, srv := testRepository(t)
			var stored []string
			store, err := newSegmentStore(repo, srv, compression, 1,
				func(c completedSegment, _ catalog.Segment) { stored = append(stored, c.Name) })
			if err != nil {
				t.Fatal(err)
			}
			seg, data := writeCompletePartial(t, repo, 7)
			if err := store.store(ctx, seg); err != nil {
				t.Fatal(err)
			}
			row, err := cat.Segment(ctx, srv.ID, seg.Name)
			if err != nil {
				t.Fatalf("not cataloged: %v", err)
			}
			if row.Checksum != checksum.Of(data) || row.Size != testSegSize || row.Compression != compression {
				t.Errorf("catalog row %+v", row)
			}
			f, err := repo.Store.Open(ctx, row.StoredPath)
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			if compression == "zstd" {
				dec, _ := zstd.NewReader(f)
				got, err = io.ReadAll(dec)
				dec.Close()
			} else {
				got, err = io.ReadAll(f)
			}
			f.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("stored file does not give back the segment: %v", err)
			}
			if _, err := os.Stat(seg.Partial); !os.IsNotExist(err) {
				t.Errorf(".partial still there after storing: %v", err)
			}
			// A crash between the catalog and the removal leaves the .partial:
			// storing again only removes it.
			seg, _ = writeCompletePartial(t, repo, 7)
			if err := store.store(ctx, seg); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(seg.Partial); !os.IsNotExist(err) {
				t.Errorf(".partial of a cataloged segment not removed: %v", err)
			}
			if len(stored) != 1 {
				t.Errorf("stored %v, want one segment once", stored)
			}
		})
	}
}

func TestSegmentStoreRefusesShortPartial(t *testing.T) {
	ctx := context.Background()
	repo, cat, srv := testRepository(t)
	store, _ := newSegmentStore(repo, srv, "zstd", 1, func(completedSegment, catalog.Segment) {})
	seg, _ := writeCompletePartial(t, repo, 3)
	os.Truncate(seg.Partial, 1000)
	if err := store.store(ctx, seg); err == nil {
		t.Fatal("a torn segment was stored")
	}
	if _, err := cat.Segment(ctx, srv.ID, seg.Name); err == nil {
		t.Fatal("a torn segment was cataloged")
	}
}

// testRepository is a local repository in a temporary directory with server
// "main" registered (segments of testSegSize).
func testRepository(t *testing.T) (*repository.Repository, *catalog.Catalog, catalog.Server) {
	t.Helper()
	ctx := context.Background()
	repo, err := repository.OpenLocal(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	srv, err := repo.Catalog.EnsureServer(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Catalog.BindIdentity(ctx, srv.ID, "7000000000000000001", testSegSize); err != nil {
		t.Fatal(err)
	}
	srv, err = repo.Catalog.ServerByName(ctx, "main")
	if err != nil {
		t.Fatal(err)
	}
	return repo, repo.Catalog, srv
}

// gatedStore holds each segment object's Commit until the test opens its
// gate, and then commits it or fails it: uploads that finish in any order.
type gatedStore struct {
	storage.ObjectStore
	mu    sync.Mutex
	gates map[string]chan error // by segment name
	// committed receives the name of each segment whose object is durable.
	committed chan string
}

func newGatedStore(inner storage.ObjectStore) *gatedStore {
	return &gatedStore{ObjectStore: inner, gates: map[string]chan error{}, committed: make(chan string, 64)}
}

func (g *gatedStore) gate(name string) chan error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gates[name] == nil {
		g.gates[name] = make(chan error, 1)
	}
	return g.gates[name]
}

// open lets the object of segment name commit (err nil) or fail with err.
func (g *gatedStore) open(name string, err error) { g.gate(name) <- err }

func (g *gatedStore) Create(ctx context.Context, key string, meta storage.Meta) (storage.ObjectWriter, error) {
	w, err := g.ObjectStore.Create(ctx, key, meta)
	if err != nil {
		return nil, err
	}
	name := strings.TrimSuffix(path.Base(key), ".zst")
	return &gatedWriter{ObjectWriter: w, g: g, name: name}, nil
}

type gatedWriter struct {
	storage.ObjectWriter
	g    *gatedStore
	name string
}

func (w *gatedWriter) Commit(ctx context.Context) (int64, error) {
	select {
	case err := <-w.g.gate(w.name):
		if err != nil {
			w.Abort()
			return 0, err
		}
	case <-ctx.Done():
		w.Abort()
		return 0, ctx.Err()
	}
	n, err := w.ObjectWriter.Commit(ctx)
	if err == nil {
		w.g.committed <- w.name
	}
	return n, err
}

// waitCommitted waits until the objects of names are durable, in any order.
func (g *gatedStore) waitCommitted(t *testing.T, names ...string) {
	t.Helper()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	for len(want) > 0 {
		select {
		case n := <-g.committed:
			delete(want, n)
		case <-time.After(10 * time.Second):
			t.Fatalf("objects of %v not committed", want)
		}
	}
}

// Uploads that finish out of order (and one that fails) still give a catalog
// and a storedUpTo that grow over a contiguous run of segments, in order: a
// segment is cataloged only when every segment before it is, and nothing is
// cataloged after a segment that failed.
func TestArchiverCatalogsInOrderWhateverOrderUploadsFinish(t *testing.T) {
	boom := errors.New("bucket out of reach")
	type step struct {
		open     walname.SegNo
		err      error
		wantUpTo walname.SegNo // storedUpTo once the archiver has done what it can
	}
	for _, tc := range []struct {
		name  string
		steps []step
		// wantErr: the archiver stops with it; wantCataloged are the
		// segments in the catalog at the end, in the order the archiver
		// reported them stored.
		wantErr       error
		wantCataloged []walname.SegNo
	}{
		{name: "in order", steps: []step{{10, nil, 11}, {11, nil, 12}, {12, nil, 13}, {13, nil, 14}},
			wantCataloged: []walname.SegNo{10, 11, 12, 13}},
		{name: "reversed", steps: []step{{13, nil, 10}, {12, nil, 10}, {11, nil, 10}, {10, nil, 14}},
			wantCataloged: []walname.SegNo{10, 11, 12, 13}},
		{name: "middle first", steps: []step{{12, nil, 10}, {10, nil, 11}, {13, nil, 11}, {11, nil, 14}},
			wantCataloged: []walname.SegNo{10, 11, 12, 13}},
		{name: "a later segment fails", steps: []step{{10, nil, 11}, {13, nil, 11}, {11, nil, 12}, {12, boom, 12}},
			wantErr: boom, wantCataloged: []walname.SegNo{10, 11}},
		{name: "an earlier segment fails after later ones are durable", steps: []step{{12, nil, 10}, {13, nil, 10}, {11, boom, 10}, {10, nil, 11}},
			wantErr: boom, wantCataloged: []walname.SegNo{10}},
		// The uploads of 12 and 13 never finish: the failure ends them.
		{name: "the first segment fails", steps: []step{{11, nil, 10}, {10, boom, 10}}, wantErr: boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			repo, cat, srv := testRepository(t)
			gated := newGatedStore(repo.Store)
			repo.Store = gated
			var mu sync.Mutex
			var stored []walname.SegNo
			store, err := newSegmentStore(repo, srv, "zstd", 1, func(c completedSegment, _ catalog.Segment) {
				mu.Lock()
				stored = append(stored, c.SegNo)
				mu.Unlock()
			})
			if err != nil {
				t.Fatal(err)
			}
			// As many workers as segments: every upload is under way at once.
			a := startArchiverWorkers(ctx, store, 0, 4, 10)
			segs := map[walname.SegNo]completedSegment{}
			for n := walname.SegNo(10); n < 14; n++ {
				segs[n], _ = writeCompletePartial(t, repo, n)
				if err := a.add(segs[n]); err != nil {
					t.Fatal(err)
				}
			}
			for _, st := range tc.steps {
				gated.open(segs[st.open].Name, st.err)
				if st.err == nil {
					gated.waitCommitted(t, segs[st.open].Name)
				}
				// The committer may still be cataloging what became possible.
				deadline := time.Now().Add(10 * time.Second)
				for a.storedUpTo() != st.wantUpTo && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				if got := a.storedUpTo(); got != st.wantUpTo {
					t.Fatalf("after segment %d: storedUpTo %d, want %d", st.open, got, st.wantUpTo)
				}
				// What the catalog holds is exactly the contiguous run before storedUpTo.
				last, err := cat.LastSegment(ctx, srv.ID)
				switch {
				case st.wantUpTo == 10 && !errors.Is(err, catalog.ErrNotFound):
					t.Fatalf("after segment %d: catalog holds %v (%v), want nothing", st.open, last.Name, err)
				case st.wantUpTo > 10 && (err != nil || last.SegNo != st.wantUpTo-1):
					t.Fatalf("after segment %d: last cataloged %d (%v), want %d", st.open, last.SegNo, err, st.wantUpTo-1)
				}
			}
			if err := a.finish(); !errors.Is(err, tc.wantErr) {
				t.Fatalf("finish: %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				if err := a.add(segs[13]); !errors.Is(err, tc.wantErr) {
					t.Errorf("add after the failure: %v", err)
				}
			}
			if fmt.Sprint(stored) != fmt.Sprint(tc.wantCataloged) {
				t.Errorf("stored in the order %v, want %v", stored, tc.wantCataloged)
			}
			rows, err := cat.Peek(ctx, srv.ID, 1, 10, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != len(tc.wantCataloged) {
				t.Errorf("catalog holds %d contiguous segments from 10, want %d", len(rows), len(tc.wantCataloged))
			}
			// Every .partial not cataloged stays for the next start; the others are gone.
			for n, seg := range segs {
				_, err := os.Stat(seg.Partial)
				if cataloged := slices.Contains(tc.wantCataloged, n); cataloged != os.IsNotExist(err) {
					t.Errorf("segment %d (cataloged %v): .partial: %v", n, cataloged, err)
				}
			}
		})
	}
}

// The archiver holds a bounded number of segments: with every upload stuck,
// add waits once the queue and the workers are full, and goes on when one
// segment is stored.
func TestArchiverAddWaitsWhenFull(t *testing.T) {
	ctx := context.Background()
	repo, _, srv := testRepository(t)
	gated := newGatedStore(repo.Store)
	repo.Store = gated
	store, err := newSegmentStore(repo, srv, "zstd", 1, func(completedSegment, catalog.Segment) {})
	if err != nil {
		t.Fatal(err)
	}
	const queue, workers = 1, 2
	a := startArchiverWorkers(ctx, store, queue, workers, 0)
	// queue + workers wait in order, and the committer holds one more.
	capacity := queue + workers + 1
	var segs []completedSegment
	for n := range walname.SegNo(capacity + 1) {
		seg, _ := writeCompletePartial(t, repo, n)
		segs = append(segs, seg)
	}
	for _, seg := range segs[:capacity] {
		if err := a.add(seg); err != nil {
			t.Fatal(err)
		}
	}
	added := make(chan error, 1)
	go func() { added <- a.add(segs[capacity]) }()
	select {
	case err := <-added:
		t.Fatalf("add returned (%v) with %d segments in the archiver", err, capacity)
	case <-time.After(200 * time.Millisecond):
	}
	gated.open(segs[0].Name, nil)
	select {
	case err := <-added:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("add still waits after a segment was stored")
	}
	for _, seg := range segs[1:] {
		gated.open(seg.Name, nil)
	}
	if err := a.finish(); err != nil {
		t.Fatal(err)
	}
	if got := a.storedUpTo(); got != walname.SegNo(capacity+1) {
		t.Fatalf("storedUpTo %d, want %d", got, capacity+1)
	}
}
