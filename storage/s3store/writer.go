package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/walhub/walhub/storage"
)

// abortTimeout bounds aborting a multipart upload after a failure, on a
// context of its own: the caller's may be the reason for the abort.
const abortTimeout = time.Minute

var metaKeyRE = regexp.MustCompile(`^[a-z0-9-]+$`)

// Create implements storage.ObjectStore. An object up to the part size is
// sent as one PUT by Commit; a larger one becomes a multipart upload whose
// parts are sent while the caller goes on writing, Concurrency at a time. The
// object appears under its key only when CompleteMultipartUpload succeeds;
// every failure, and Abort, aborts the upload so no part is left behind.
func (s *Store) Create(ctx context.Context, key string, meta storage.Meta) (storage.ObjectWriter, error) {
	if s.cfg.ReadOnly {
		return nil, fmt.Errorf("create %s: %w", key, storage.ErrReadOnly)
	}
	ok, err := s.objectKey(key)
	if err != nil {
		return nil, err
	}
	size := 0
	for k, v := range meta {
		if !metaKeyRE.MatchString(k) {
			return nil, fmt.Errorf("create %s: metadata key %q is not of a-z 0-9 -", key, k)
		}
		for i := 0; i < len(v); i++ {
			if v[i] < 0x20 || v[i] > 0x7e {
				return nil, fmt.Errorf("create %s: metadata %s: value is not printable ASCII", key, k)
			}
		}
		size += len(k) + len(v)
	}
	if size > 2048 {
		return nil, fmt.Errorf("create %s: metadata of %d bytes is above S3's 2 KiB", key, size)
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w := &writer{
		s:      s,
		key:    key,
		objKey: ok,
		meta:   map[string]string(meta),
		ctx:    pctx,
		cancel: cancel,
		free:   make(chan []byte, s.cfg.Concurrency+1),
		sem:    make(chan struct{}, s.cfg.Concurrency),
	}
	// The caller's context ends the parts' requests too.
	w.stop = context.AfterFunc(ctx, func() { w.fail(fmt.Errorf("write %s: %w", key, ctx.Err())); cancel() })
	return w, nil
}

// writer is one object being written. Memory: buf is the part being filled;
// every part handed to sendPart holds its own buffer until its request ends
// (Concurrency requests at a time); at most Concurrency+1 buffers of PartSize
// ever exist (allocated counts them), and Write blocks for a free one when all
// are taken.
type writer struct {
	s      *Store
	key    string // repository key, for messages
	objKey string
	meta   map[string]string
	ctx    context.Context // the parts' requests; cancelled by Abort
	cancel context.CancelFunc
	stop   func() bool

	buf       []byte
	free      chan []byte
	sem       chan struct{} // one token per part request in flight
	allocated int
	n         int64

	uploadID *string
	partNum  int32
	wg       sync.WaitGroup

	mu    sync.Mutex
	parts []types.CompletedPart
	err   error // the first failure; every later call returns it

	finished bool
}

func (w *writer) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

func (w *writer) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Write implements io.Writer.
func (w *writer) Write(p []byte) (int, error) {
	if w.finished {
		return 0, fmt.Errorf("write %s: %w", w.key, errFinished)
	}
	written := 0
	for len(p) > 0 {
		if err := w.failed(); err != nil {
			return written, err
		}
		if w.buf == nil {
			b, err := w.buffer()
			if err != nil {
				return written, err
			}
			w.buf = b
		}
		k := min(len(p), int(w.s.cfg.PartSize)-len(w.buf))
		if len(w.buf)+k > cap(w.buf) {
			w.grow()
		}
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		written += k
		w.n += int64(k)
		if len(w.buf) == int(w.s.cfg.PartSize) {
			if err := w.sendPart(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// buffer returns an empty part buffer: a free one of this writer's, else one
// of the store's spares while this writer holds fewer than Concurrency+1,
// else the next one a finished part gives back. The first buffer starts small
// (most WAL segments and every manifest fit) and is swapped for a full part
// buffer when it fills, so a small object costs its own size.
func (w *writer) buffer() ([]byte, error) {
	select {
	case b := <-w.free:
		return b, nil
	default:
	}
	if w.allocated == 0 {
		w.allocated++
		return make([]byte, 0, smallBuffer), nil
	}
	if w.allocated < w.s.cfg.Concurrency+1 {
		w.allocated++
		return w.s.partBuffer(), nil
	}
	select {
	case b := <-w.free:
		return b, nil
	case <-w.ctx.Done():
		if err := w.failed(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("write %s: %w", w.key, w.ctx.Err())
	}
}

// smallBuffer is the first buffer of every writer.
const smallBuffer = 64 << 10

// grow makes room in the small first buffer: it becomes a part buffer.
func (w *writer) grow() {
	if cap(w.buf) < int(w.s.cfg.PartSize) {
		b := append(w.s.partBuffer(), w.buf...)
		w.buf = b
	}
}

// sendPart starts the multipart upload if needed and sends buf as the next
// part in the background; the buffer returns to the free list when its
// request ends.
func (w *writer) sendPart() error {
	if w.uploadID == nil {
		out, err := w.s.client.CreateMultipartUpload(w.ctx, &s3.CreateMultipartUploadInput{
			Bucket:   &w.s.cfg.Bucket,
			Key:      &w.objKey,
			Metadata: w.meta,
		})
		if err != nil {
			err = w.s.wrap("start multipart upload of", w.key, err)
			w.fail(err)
			return err
		}
		w.uploadID = out.UploadId
	}
	if w.partNum == MaxParts {
		err := fmt.Errorf("write %s: more than %d parts of %d bytes: raise s3.part_size_mb", w.key, MaxParts, w.s.cfg.PartSize)
		w.fail(err)
		return err
	}
	w.partNum++
	num, data := w.partNum, w.buf
	w.buf = nil
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer func() { w.free <- data[:0] }()
		select {
		case w.sem <- struct{}{}:
			defer func() { <-w.sem }()
		case <-w.ctx.Done():
			w.fail(fmt.Errorf("upload part %d of %s: %w", num, w.key, w.ctx.Err()))
			return
		}
		out, err := w.s.client.UploadPart(w.ctx, &s3.UploadPartInput{
			Bucket:        &w.s.cfg.Bucket,
			Key:           &w.objKey,
			UploadId:      w.uploadID,
			PartNumber:    aws.Int32(num),
			Body:          bytes.NewReader(data),
			ContentLength: aws.Int64(int64(len(data))),
		})
		if err != nil {
			w.fail(w.s.wrap(fmt.Sprintf("upload part %d of", num), w.key, err))
			w.cancel() // the other parts are wasted work now
			return
		}
		w.mu.Lock()
		w.parts = append(w.parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
		w.mu.Unlock()
	}()
	return nil
}

// Commit implements storage.ObjectWriter.
func (w *writer) Commit(ctx context.Context) (int64, error) {
	if w.finished {
		return 0, fmt.Errorf("commit %s: %w", w.key, errFinished)
	}
	if err := w.failed(); err != nil {
		w.Abort()
		return 0, err
	}
	if w.uploadID == nil {
		w.finished = true
		defer w.release()
		_, err := w.s.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket:        &w.s.cfg.Bucket,
			Key:           &w.objKey,
			Body:          bytes.NewReader(w.buf),
			ContentLength: aws.Int64(int64(len(w.buf))),
			Metadata:      w.meta,
		})
		if err != nil {
			return 0, w.s.wrap("put", w.key, err)
		}
		return w.n, nil
	}
	if len(w.buf) > 0 {
		if err := w.sendPart(); err != nil {
			w.Abort()
			return 0, err
		}
	}
	// Wait for the parts, or for the caller to give up.
	sent := make(chan struct{})
	go func() { w.wg.Wait(); close(sent) }()
	select {
	case <-sent:
	case <-ctx.Done():
		w.fail(fmt.Errorf("commit %s: %w", w.key, ctx.Err()))
		w.Abort()
		return 0, w.failed()
	}
	if err := w.failed(); err != nil {
		w.Abort()
		return 0, err
	}
	parts := slices.SortedFunc(slices.Values(w.parts), func(a, b types.CompletedPart) int {
		return int(aws.ToInt32(a.PartNumber) - aws.ToInt32(b.PartNumber))
	})
	_, err := w.s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          &w.s.cfg.Bucket,
		Key:             &w.objKey,
		UploadId:        w.uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		w.fail(w.s.wrap("complete multipart upload of", w.key, err))
		w.Abort()
		return 0, w.failed()
	}
	w.finished = true
	w.release()
	return w.n, nil
}

// Abort implements storage.ObjectWriter: it stops the parts being sent and
// aborts the multipart upload, on a context of its own.
func (w *writer) Abort() error {
	if w.finished {
		return nil
	}
	w.finished = true
	defer w.release()
	w.cancel()
	w.wg.Wait()
	if w.uploadID == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), abortTimeout)
	defer cancel()
	_, err := w.s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: &w.s.cfg.Bucket, Key: &w.objKey, UploadId: w.uploadID,
	})
	if err != nil && !hasCode(err, "NoSuchUpload") {
		return w.s.wrap("abort multipart upload of", w.key, err)
	}
	return nil
}

// release gives the part buffers back to the store and detaches from the
// caller's context.
func (w *writer) release() {
	w.stop()
	w.cancel()
	if cap(w.buf) == int(w.s.cfg.PartSize) {
		w.s.putPartBuffer(w.buf)
	}
	w.buf = nil
	for {
		select {
		case b := <-w.free:
			if cap(b) == int(w.s.cfg.PartSize) {
				w.s.putPartBuffer(b)
			}
		default:
			return
		}
	}
}

// partBuffer returns an empty buffer of PartSize capacity: a spare one, or a
// new one. The store keeps up to Concurrency+1 spares, so that one WAL
// segment after another does not allocate a part buffer each.
func (s *Store) partBuffer() []byte {
	select {
	case b := <-s.spares:
		return b[:0]
	default:
		return make([]byte, 0, s.cfg.PartSize)
	}
}

func (s *Store) putPartBuffer(b []byte) {
	select {
	case s.spares <- b[:0]:
	default:
	}
}

var errFinished = errors.New("writer already committed or aborted")
