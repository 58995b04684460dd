package stream

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
)

// segmentStore turns complete .partial files into stored, cataloged segments
// through the repository (the object durable, then its catalog row), and only
// then removes the .partial.
type segmentStore struct {
	storer *repository.SegmentStorer
	// stored is called after each segment is cataloged.
	stored func(completedSegment, catalog.Segment)
}

func newSegmentStore(repo *repository.Repository, srv catalog.Server, compression string, level int,
	stored func(completedSegment, catalog.Segment)) (*segmentStore, error) {
	storer, err := repo.SegmentStorer(srv, compression, level)
	if err != nil {
		return nil, err
	}
	// The WAL index reads restore points and commit times from each segment.
	storer.SetIndex(&contentIndex{cat: repo.Catalog, serverID: srv.ID, segSize: srv.SegmentSize,
		log: slog.Default().With("server", srv.Name)})
	return &segmentStore{storer: storer, stored: stored}, nil
}

// store stores one complete segment. It is idempotent: a segment already
// cataloged (a crash came between the catalog and the removal of the
// .partial) only has its .partial removed.
func (s *segmentStore) store(ctx context.Context, seg completedSegment) error {
	row, stored, err := s.storer.StoreFile(ctx, seg.Name, seg.Partial)
	if err != nil {
		return err
	}
	if err := storage.RemovePartial(seg.Partial); err != nil {
		return err
	}
	if stored {
		s.stored(seg, row)
	}
	return nil
}

// archiver runs a segmentStore in the background so that receiving goes on
// while the last segment is compressed. Its queue is bounded: when storing
// falls behind, receiving waits, so neither memory nor the number of pending
// .partial files grows with the WAL volume.
type archiver struct {
	store *segmentStore
	jobs  chan completedSegment
	done  chan struct{}
	err   error // set before done is closed
	// next is the number of the segment after the last one stored: every
	// segment before it is in the store.
	next atomic.Uint64
}

// startArchiver starts storing the segments added, from segment next on
// (every segment before it is stored).
func startArchiver(ctx context.Context, store *segmentStore, queue int, next walname.SegNo) *archiver {
	a := &archiver{store: store, jobs: make(chan completedSegment, queue), done: make(chan struct{})}
	a.next.Store(uint64(next))
	go func() {
		defer close(a.done)
		for seg := range a.jobs {
			if err := store.store(ctx, seg); err != nil {
				// The .partial files of this and the queued segments stay, and are
				// stored at the next start.
				a.err = err
				return
			}
			a.next.Store(uint64(seg.SegNo + 1))
		}
	}()
	return a
}

// storedUpTo is the number of the first segment not known to be stored.
func (a *archiver) storedUpTo() walname.SegNo { return walname.SegNo(a.next.Load()) }

// add queues a complete segment, waiting while the queue is full.
func (a *archiver) add(seg completedSegment) error {
	select {
	case a.jobs <- seg:
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
	close(a.jobs)
	<-a.done
	return a.err
}
