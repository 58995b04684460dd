package stream

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
)

// segmentStore turns complete .partial files into stored, cataloged segments
// through the repository (the object durable, then its catalog row), and only
// then removes the .partial (or keeps its file for reuse: retire).
type segmentStore struct {
	storer *repository.SegmentStorer
	// stored is called after each segment is cataloged.
	stored func(completedSegment, catalog.Segment)
	// retire disposes of the .partial of a segment cataloged
	// (partialFiles.retire); nil removes it.
	retire func(path string) error
}

func newSegmentStore(repo *repository.Repository, srv catalog.Server, compression string, level int,
	stored func(completedSegment, catalog.Segment)) (*segmentStore, error) {
	storer, err := repo.SegmentStorer(srv, compression, level)
	if err != nil {
		return nil, err
	}
	// The WAL index reads restore points and commit times from each segment.
	storer.SetIndex(repo.WALIndex(srv, slog.Default().With("server", srv.Name)))
	return &segmentStore{storer: storer, stored: stored}, nil
}

// store stores one complete segment. It is idempotent: a segment already
// cataloged (a crash came between the catalog and the removal of the
// .partial) only has its .partial removed.
func (s *segmentStore) store(ctx context.Context, seg completedSegment) error {
	row, cataloged, err := s.put(ctx, seg)
	if err != nil {
		return err
	}
	return s.catalog(ctx, seg, row, cataloged)
}

// put makes the object of seg durable (see repository.SegmentStorer.PutFile);
// it may run for many segments at once.
func (s *segmentStore) put(ctx context.Context, seg completedSegment) (catalog.Segment, bool, error) {
	return s.storer.PutFile(ctx, seg.Name, seg.Partial, seg.Checksum)
}

// catalog commits the row of a segment whose object put made durable, then
// retires its .partial. Segments must come one at a time, in order.
func (s *segmentStore) catalog(ctx context.Context, seg completedSegment, row catalog.Segment, cataloged bool) error {
	if !cataloged {
		var err error
		if row, err = s.storer.CatalogFile(ctx, row, seg.Partial); err != nil {
			return err
		}
	}
	retire := s.retire
	if retire == nil {
		retire = storage.RemovePartial
	}
	if err := retire(seg.Partial); err != nil {
		return err
	}
	if !cataloged {
		s.stored(seg, row)
	}
	return nil
}

// archiver stores complete segments in the background so that receiving goes
// on while they are compressed and uploaded. Up to GOMAXPROCS workers (at
// most maxArchiveWorkers) make the objects durable at once (checksum,
// compression, upload: the costly part); one committer then takes the
// segments in their order, runs the WAL index over each, commits its catalog
// row, and only then removes its .partial. So the catalog grows as a
// contiguous run of segments, whatever order the uploads finish in: a
// restart resumes after the last segment cataloged (session.resumePoint) and
// must find every segment before it cataloged, and storedUpTo, which caps
// the slot when the store is a bucket (session.flushed), never passes a
// segment that is not stored.
//
// The number of segments in the archiver is bounded (queue waiting, plus
// one per worker, plus the one being cataloged): when storing falls behind,
// receiving waits, so neither memory nor the number of pending .partial
// files grows with the WAL volume.
type archiver struct {
	store *segmentStore
	// jobs go to the workers; order to the committer, in segment order.
	jobs  chan *archiveJob
	order chan *archiveJob
	// stop ends the workers' uploads when the committer has failed.
	stop    context.CancelFunc
	workers sync.WaitGroup
	done    chan struct{} // closed when the committer has returned
	err     error         // set before done is closed
	// next is the number of the segment after the last one stored: every
	// segment before it is in the store.
	next atomic.Uint64
}

// archiveJob is one complete segment on its way through the archiver.
type archiveJob struct {
	seg completedSegment
	// put receives the outcome of the worker's upload, once.
	put chan putResult
}

type putResult struct {
	row       catalog.Segment
	cataloged bool
	err       error
}

// maxArchiveWorkers caps the workers on a large machine: each holds an
// encoder (a few MB) and a complete segment in the working area, and eight
// compress faster than a server produces WAL.
const maxArchiveWorkers = 8

// startArchiver starts storing the segments added, from segment next on
// (every segment before it is stored), with one worker per core
// (GOMAXPROCS, at most maxArchiveWorkers); up to queue segments wait for a
// worker.
func startArchiver(ctx context.Context, store *segmentStore, queue int, next walname.SegNo) *archiver {
	return startArchiverWorkers(ctx, store, queue, min(runtime.GOMAXPROCS(0), maxArchiveWorkers), next)
}

// startArchiverWorkers is startArchiver with the number of workers given.
func startArchiverWorkers(ctx context.Context, store *segmentStore, queue, workers int, next walname.SegNo) *archiver {
	workers = max(workers, 1)
	// A job is in order until the committer takes it, so at most cap(order)+1
	// jobs are in the archiver: jobs can hold them all, and add never waits
	// on it.
	inFlight := queue + workers
	a := &archiver{store: store, jobs: make(chan *archiveJob, inFlight+1), order: make(chan *archiveJob, inFlight),
		done: make(chan struct{})}
	a.next.Store(uint64(next))
	workCtx, stop := context.WithCancel(ctx)
	a.stop = stop
	a.workers.Add(workers)
	for range workers {
		go a.work(workCtx)
	}
	go a.commit(ctx)
	return a
}

// work makes the objects of the segments it takes durable.
func (a *archiver) work(ctx context.Context) {
	defer a.workers.Done()
	for job := range a.jobs {
		var r putResult
		if r.err = ctx.Err(); r.err == nil {
			r.row, r.cataloged, r.err = a.store.put(ctx, job.seg)
		}
		job.put <- r
	}
}

// commit catalogs the segments in order as their objects become durable. At
// the first failure it stops: the .partial files of that segment and of all
// after it stay, and are stored at the next start.
func (a *archiver) commit(ctx context.Context) {
	defer close(a.done)
	defer a.stop()
	for job := range a.order {
		r := <-job.put
		err := r.err
		if err == nil {
			err = a.store.catalog(ctx, job.seg, r.row, r.cataloged)
		}
		if err != nil {
			a.err = err
			return
		}
		a.next.Store(uint64(job.seg.SegNo + 1))
	}
}

// storedUpTo is the number of the first segment not known to be stored.
func (a *archiver) storedUpTo() walname.SegNo { return walname.SegNo(a.next.Load()) }

// add queues a complete segment, waiting while the archiver is full.
func (a *archiver) add(seg completedSegment) error {
	if err := a.failure(); err != nil {
		return err
	}
	job := &archiveJob{seg: seg, put: make(chan putResult, 1)}
	select {
	case a.order <- job:
		a.jobs <- job
		return nil
	case <-a.done:
		return a.failure()
	}
}

// failure returns the error that stopped the archiver, if it stopped.
func (a *archiver) failure() error {
	select {
	case <-a.done:
		if a.err != nil {
			return a.err
		}
		return errors.New("segment archiver stopped")
	default:
		return nil
	}
}

// finish stores what is queued and stops.
func (a *archiver) finish() error {
	close(a.order)
	close(a.jobs)
	<-a.done
	a.workers.Wait()
	return a.err
}
