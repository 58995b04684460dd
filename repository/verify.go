package repository

import (
	"context"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/walname"
)

// WALCheck is what VerifyWAL checked of one server.
type WALCheck struct {
	Segments, HistoryFiles int
	// Bytes is what was read from the store.
	Bytes int64
	// Problems names every object that failed, and why.
	Problems []string
}

// VerifyWAL reads every cataloged segment and history file of srv from the
// store: each must open and read to its end (in an encrypted repository that
// authenticates every chunk), decompress, and give the size and CRC-32C its
// catalog row records. Problems are collected, not returned as errors; the
// error is for what stops the check (the catalog, a canceled ctx).
func (r *Repository) VerifyWAL(ctx context.Context, srv catalog.Server) (WALCheck, error) {
	var c WALCheck
	tls, err := r.Catalog.TimeLines(ctx, srv.ID)
	if err != nil {
		return c, err
	}
	for _, tl := range tls {
		if tl.StoredPath == "" {
			continue // timeline 1 has no history file
		}
		c.HistoryFiles++
		n, err := r.checkHistory(ctx, srv, tl)
		c.Bytes += n
		if err != nil {
			c.Problems = append(c.Problems, fmt.Sprintf("history file of timeline %d: %v", tl.TimeLine, err))
		}
		if ctx.Err() != nil {
			return c, ctx.Err()
		}
	}
	ranges, err := r.Catalog.SegmentRanges(ctx, srv.ID)
	if err != nil {
		return c, err
	}
	var dec *zstd.Decoder
	defer func() {
		if dec != nil {
			dec.Close()
		}
	}()
	const batch = 4096
	for _, tr := range ranges {
		for from := tr.First; from <= tr.Last; from += batch {
			segs, err := r.Catalog.Segments(ctx, srv.ID, tr.TimeLine, from, min(from+batch, tr.Last+1))
			if err != nil {
				return c, err
			}
			for _, seg := range segs {
				if seg.Compression == "zstd" && dec == nil {
					if dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1)); err != nil {
						return c, err
					}
				}
				c.Segments++
				n, err := r.checkSegment(ctx, seg, dec)
				c.Bytes += n
				if err != nil {
					c.Problems = append(c.Problems, fmt.Sprintf("segment %s (%s): %v", seg.Name, seg.StoredPath, err))
				}
				if ctx.Err() != nil {
					return c, ctx.Err()
				}
			}
		}
	}
	return c, nil
}

// checkSegment reads one segment's object to its end and compares size and
// checksum with its row. It returns the bytes read from the store.
func (r *Repository) checkSegment(ctx context.Context, seg catalog.Segment, dec *zstd.Decoder) (int64, error) {
	f, err := r.OpenSegment(ctx, seg)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	counted := &countingReader{r: f}
	var in io.Reader = counted
	switch seg.Compression {
	case "zstd":
		if err := dec.Reset(counted); err != nil {
			return counted.n, err
		}
		in = dec
	case "none":
	default:
		return 0, fmt.Errorf("unknown compression %q", seg.Compression)
	}
	sum := checksum.New()
	size, err := io.Copy(sum, io.LimitReader(in, walname.MaxSegmentSize+1))
	if err != nil {
		return counted.n, err
	}
	return counted.n, matchesRow(seg, size, sum.Sum32())
}

// checkHistory reads one history file and compares it with the catalog's copy.
func (r *Repository) checkHistory(ctx context.Context, srv catalog.Server, tl catalog.TimeLine) (int64, error) {
	f, err := r.OpenHistory(ctx, srv, tl)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 1<<24))
	if err != nil {
		return int64(len(data)), err
	}
	if string(data) != string(tl.History) {
		return int64(len(data)), fmt.Errorf("differs from the catalog's copy")
	}
	return int64(len(data)), nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
