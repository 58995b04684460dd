package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/walhub/walhub/storage"
)

// Open implements storage.ObjectStore. It starts a GET of the whole object,
// which gives its size and ETag and is the stream sequential reads go on
// with; later GETs (after a Seek elsewhere, a broken stream, ReadAt) are
// Range GETs of that ETag (If-Match), so a replaced object is an error rather
// than a mix of two. Nothing reads a whole object into memory, and serving a
// segment costs one request.
func (s *Store) Open(ctx context.Context, key string) (storage.ObjectReader, error) {
	ok, err := s.objectKey(key)
	if err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: &ok})
	if err != nil {
		return nil, s.wrap("open", key, err)
	}
	return &reader{s: s, ctx: ctx, key: key, objKey: ok, size: aws.ToInt64(out.ContentLength), etag: out.ETag, body: out.Body}, nil
}

// reader is an open object.
type reader struct {
	s      *Store
	ctx    context.Context
	key    string
	objKey string
	size   int64
	etag   *string

	pos     int64
	body    io.ReadCloser // a GET streaming from bodyPos, or nil
	bodyPos int64
}

// Size implements storage.ObjectReader.
func (r *reader) Size() int64 { return r.size }

// get starts a GET of [off, end) (end < 0: to the object's end).
func (r *reader) get(off, end int64) (io.ReadCloser, error) {
	rng := fmt.Sprintf("bytes=%d-", off)
	if end >= 0 {
		rng = fmt.Sprintf("bytes=%d-%d", off, end-1)
	}
	out, err := r.s.client.GetObject(r.ctx, &s3.GetObjectInput{
		Bucket: &r.s.cfg.Bucket, Key: &r.objKey, Range: &rng, IfMatch: r.etag,
	})
	if err != nil {
		return nil, r.s.wrap("read", r.key, err)
	}
	return out.Body, nil
}

// Read implements io.Reader. A stream broken after its response began (the
// SDK retries only until the headers) is resumed from where it broke, with
// the same capped backoff as the SDK's retries.
func (r *reader) Read(p []byte) (int, error) {
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	var lastErr error
	for attempt := 0; attempt < r.s.cfg.MaxAttempts; attempt++ {
		if attempt > 0 {
			if err := r.sleep(attempt); err != nil {
				return 0, err
			}
		}
		if r.body != nil && r.bodyPos != r.pos {
			r.body.Close() // a Seek moved away from the stream
			r.body = nil
		}
		if r.body == nil {
			body, err := r.get(r.pos, -1)
			if err != nil {
				return 0, err // the SDK has retried already
			}
			r.body, r.bodyPos = body, r.pos
		}
		n, err := r.body.Read(p)
		r.pos += int64(n)
		r.bodyPos = r.pos
		switch {
		case err == nil && n > 0:
			return n, nil
		case err == nil:
			lastErr = io.ErrNoProgress
			continue
		case errors.Is(err, io.EOF) && r.pos == r.size:
			r.body.Close()
			r.body = nil
			if n > 0 {
				return n, nil
			}
			return 0, io.EOF
		}
		// The stream broke (or ended early): resume at r.pos.
		r.body.Close()
		r.body = nil
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		lastErr = err
		if n > 0 {
			return n, nil
		}
		if r.ctx.Err() != nil {
			return 0, fmt.Errorf("read %s: %w", r.key, r.ctx.Err())
		}
	}
	return 0, fmt.Errorf("read %s in %s at offset %d: %w", r.key, r.s, r.pos, lastErr)
}

func (r *reader) sleep(attempt int) error {
	d := min(100*time.Millisecond<<attempt, r.s.cfg.MaxBackoff)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-r.ctx.Done():
		return fmt.Errorf("read %s: %w", r.key, r.ctx.Err())
	}
}

// Seek implements io.Seeker.
func (r *reader) Seek(offset int64, whence int) (int64, error) {
	var pos int64
	switch whence {
	case io.SeekStart:
		pos = offset
	case io.SeekCurrent:
		pos = r.pos + offset
	case io.SeekEnd:
		pos = r.size + offset
	default:
		return 0, fmt.Errorf("seek %s: invalid whence %d", r.key, whence)
	}
	if pos < 0 {
		return 0, fmt.Errorf("seek %s: negative position %d", r.key, pos)
	}
	// The stream is dropped by the next Read if it is not at pos: seeking to
	// the end for the size and back (http.ServeContent) costs nothing.
	r.pos = pos
	return pos, nil
}

// ReadAt implements io.ReaderAt with one Range GET (resumed like Read).
func (r *reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %s: negative offset %d", r.key, off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), r.size)
	want := int(end - off)
	got := 0
	var lastErr error
	for attempt := 0; got < want && attempt < r.s.cfg.MaxAttempts; attempt++ {
		if attempt > 0 {
			if err := r.sleep(attempt); err != nil {
				return got, err
			}
		}
		body, err := r.get(off+int64(got), end)
		if err != nil {
			return got, err
		}
		n, err := io.ReadFull(body, p[got:want])
		body.Close()
		got += n
		lastErr = err
	}
	if got < want {
		return got, fmt.Errorf("read %s in %s at offset %d: %w", r.key, r.s, off+int64(got), lastErr)
	}
	if want < len(p) {
		return got, io.EOF
	}
	return got, nil
}

// Close implements io.Closer.
func (r *reader) Close() error {
	if r.body != nil {
		err := r.body.Close()
		r.body = nil
		return err
	}
	return nil
}
