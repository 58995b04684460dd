package hub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/labstack/echo/v4"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/walname"
)

// walName parses the :name parameter against the WAL name grammar. Nothing
// reaches the file system before this succeeds.
func walName(c echo.Context, srv catalog.Server) (walname.Name, error) {
	raw, err := param(c, "name")
	if err != nil {
		return walname.Name{}, err
	}
	n, err := walname.Parse(raw)
	if err != nil {
		return walname.Name{}, errorf(http.StatusBadRequest, api.CodeBadRequest, "%v", err)
	}
	if n.Kind != walname.KindHistory && srv.SegmentSize != 0 {
		if _, err := n.SegNo(srv.SegmentSize); err != nil {
			return walname.Name{}, errorf(http.StatusBadRequest, api.CodeBadRequest, "%v", err)
		}
	}
	return n, nil
}

// getWAL serves a segment, a .history file or, when explicitly asked for (the
// .partial name, or ?partial=1 on a segment name), the segment being received.
func (s *Server) getWAL(c echo.Context) error {
	srv, err := s.lookupServer(c)
	if err != nil {
		return err
	}
	n, err := walName(c, srv)
	if err != nil {
		return err
	}
	switch n.Kind {
	case walname.KindSegment:
		if c.QueryParam("partial") == "1" {
			n.Kind = walname.KindPartial
			return s.servePartial(c, srv, n)
		}
		return s.serveSegment(c, srv, n.String())
	case walname.KindPartial:
		return s.servePartial(c, srv, n)
	case walname.KindHistory:
		return s.serveHistory(c, srv, n.TimeLine)
	}
	return errorf(http.StatusNotFound, api.CodeNotFound, "the hub does not keep %s files (%s)", n.Kind, n)
}

func (s *Server) setIdentity(c echo.Context, srv catalog.Server) {
	h := c.Response().Header()
	h.Set(api.HeaderSystemID, srv.SystemID)
	h.Set(api.HeaderSegmentSize, strconv.FormatUint(srv.SegmentSize, 10))
}

// serveSegment sends a stored segment: as stored when the client accepts its
// encoding, else decompressed on the fly.
func (s *Server) serveSegment(c echo.Context, srv catalog.Server, name string) error {
	seg, err := s.o.Repo.Catalog.Segment(c.Request().Context(), srv.ID, name)
	if errors.Is(err, catalog.ErrNotFound) {
		return errorf(http.StatusNotFound, api.CodeNotFound, "segment %s of server %s is not in the hub", name, srv.Name)
	}
	if err != nil {
		return err
	}
	f, err := s.o.Repo.OpenSegment(c.Request().Context(), seg)
	if err != nil {
		return fmt.Errorf("segment %s is in the catalog but its object cannot be opened: %w", name, err)
	}
	defer f.Close()
	h := c.Response().Header()
	s.setIdentity(c, srv)
	h.Set(api.HeaderChecksum, seg.Checksum)
	h.Set(api.HeaderSize, strconv.FormatInt(seg.Size, 10))
	h.Set(echo.HeaderContentType, echo.MIMEOctetStream)
	h.Set("Vary", "Accept-Encoding")
	var body io.Reader = f
	switch {
	case seg.Compression == "none":
		h.Set(echo.HeaderContentLength, strconv.FormatInt(f.Size(), 10))
	case seg.Compression == "zstd" && acceptsZstd(c.Request()):
		h.Set("Content-Encoding", "zstd")
		h.Set(echo.HeaderContentLength, strconv.FormatInt(f.Size(), 10))
	case seg.Compression == "zstd":
		dec, err := s.decoders.get(c.Request().Context())
		if err != nil {
			return err
		}
		defer s.decoders.put(dec)
		if err := dec.Reset(f); err != nil {
			return fmt.Errorf("decompress segment %s: %w", name, err)
		}
		body = dec
		h.Set(echo.HeaderContentLength, strconv.FormatInt(seg.Size, 10))
	default:
		return fmt.Errorf("segment %s: unknown compression %q in the catalog", name, seg.Compression)
	}
	return s.sendBody(c, body, name)
}

// sendBody writes the status and, except for HEAD, the body, in chunks of
// sendChunk bytes: each chunk moves the write deadline, so a client that
// stops reading is dropped after writeStall while a slow but steady download
// goes on however long it takes.
func (s *Server) sendBody(c echo.Context, body io.Reader, what string) error {
	resp := c.Response()
	resp.WriteHeader(http.StatusOK)
	if c.Request().Method == http.MethodHead {
		return nil
	}
	rc := http.NewResponseController(resp.Writer)
	bp := sendBuffers.Get().(*[]byte)
	defer sendBuffers.Put(bp)
	buf := *bp
	for {
		rc.SetWriteDeadline(time.Now().Add(s.limits.writeStall))
		n, err := io.ReadFull(body, buf)
		if n > 0 {
			w, werr := resp.Writer.Write(buf[:n])
			resp.Size += int64(w)
			if werr != nil {
				return fmt.Errorf("send %s: %w", what, werr)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("send %s: read: %w", what, err)
		}
	}
}

// sendBuffers hold sendChunk bytes each. A body is read and written a chunk
// at a time, by one read and one write each, not by io.Copy into the
// ResponseWriter, which net/http does in 32 KiB pieces (the hub's connection
// wrappers hide the TCP connection's ReadFrom): an eighth of the system calls,
// 10-20% less CPU per segment served (BenchmarkServeSegment). Passing ReadFrom
// through to get sendfile(2) was measured too, and cost more CPU than either
// on loopback.
var sendBuffers = sync.Pool{New: func() any { b := make([]byte, sendChunk); return &b }}

// servePartial sends the segment being received, uncompressed: what a
// point-in-time recovery of a lost primary needs for its last WAL. It is only
// ever sent when asked for by name, never in place of a segment.
func (s *Server) servePartial(c echo.Context, srv catalog.Server, n walname.Name) error {
	seg := n
	seg.Kind = walname.KindSegment
	var f PartialFile
	limit := int64(walname.MaxSegmentSize)
	var err error
	if s.o.Partial != nil {
		f, limit, err = s.o.Partial(c.Request().Context(), srv.Name, seg.String())
	} else {
		f, err = s.o.Repo.Work.OpenPartial(srv.Name, seg.String())
	}
	if errors.Is(err, os.ErrNotExist) {
		return errorf(http.StatusNotFound, api.CodeNotFound, "no partial segment %s.partial for server %s", seg, srv.Name)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "%v", err)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	return s.sendGrowing(c, srv, f, limit, seg.String()+".partial")
}

// sendGrowing streams a file the receiver is still appending to, without
// holding it in memory: the size (at most limit) and checksum of its first
// bytes are taken first, then exactly those bytes are sent. Should the
// receiver rewrite them meanwhile (it replaces a .partial when it starts the
// segment again), the body no longer matches its checksum header and every
// client refuses it.
func (s *Server) sendGrowing(c echo.Context, srv catalog.Server, f io.ReaderAt, limit int64, what string) error {
	crc := checksum.New()
	size, err := io.Copy(crc, io.NewSectionReader(f, 0, limit))
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	h := c.Response().Header()
	s.setIdentity(c, srv)
	h.Set(api.HeaderChecksum, checksum.Format(crc.Sum32()))
	h.Set(api.HeaderSize, strconv.FormatInt(size, 10))
	h.Set(echo.HeaderContentType, echo.MIMEOctetStream)
	h.Set(echo.HeaderContentLength, strconv.FormatInt(size, 10))
	return s.sendBody(c, io.NewSectionReader(f, 0, size), what)
}

// serveHistory sends a timeline's history file.
func (s *Server) serveHistory(c echo.Context, srv catalog.Server, tli walname.TimeLine) error {
	name := walname.HistoryName(tli)
	tl, err := s.o.Repo.Catalog.TimeLine(c.Request().Context(), srv.ID, tli)
	if errors.Is(err, catalog.ErrNotFound) {
		return errorf(http.StatusNotFound, api.CodeNotFound, "history file %s of server %s is not in the hub", name, srv.Name)
	}
	if err != nil {
		return err
	}
	data := tl.History
	if len(data) == 0 {
		f, err := s.o.Repo.OpenHistory(c.Request().Context(), srv, tl)
		if errors.Is(err, os.ErrNotExist) {
			return errorf(http.StatusNotFound, api.CodeNotFound, "history file %s of server %s is not in the hub", name, srv.Name)
		}
		if err != nil {
			return err
		}
		defer f.Close()
		if data, err = io.ReadAll(io.LimitReader(f, 1<<24)); err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
	}
	return s.sendBytes(c, srv, data, name)
}

func (s *Server) sendBytes(c echo.Context, srv catalog.Server, data []byte, what string) error {
	h := c.Response().Header()
	s.setIdentity(c, srv)
	h.Set(api.HeaderChecksum, checksum.Of(data))
	h.Set(api.HeaderSize, strconv.Itoa(len(data)))
	h.Set(echo.HeaderContentType, echo.MIMEOctetStream)
	h.Set(echo.HeaderContentLength, strconv.Itoa(len(data)))
	return s.sendBody(c, bytes.NewReader(data), what)
}

// peek lists the requested segment and the consecutive ones after it on the
// same timeline, at most n (capped by hub.max_peek).
func (s *Server) peek(c echo.Context) error {
	srv, err := s.lookupServer(c)
	if err != nil {
		return err
	}
	n, err := walName(c, srv)
	if err != nil {
		return err
	}
	if n.Kind != walname.KindSegment {
		return errorf(http.StatusBadRequest, api.CodeBadRequest, "peek needs a segment name, not a %s file", n.Kind)
	}
	count := 1
	if q := c.QueryParam("n"); q != "" {
		v, err := strconv.Atoi(q)
		if err != nil || v < 1 {
			return errorf(http.StatusBadRequest, api.CodeBadRequest, "n: %.40q is not a positive number", q)
		}
		count = min(v, s.config().Hub.MaxPeek)
	}
	out := api.Peek{Server: srv.Name, SystemID: srv.SystemID, SegmentSize: srv.SegmentSize, Limit: count, Segments: []api.PeekSegment{}}
	if srv.SegmentSize == 0 {
		return c.JSON(http.StatusOK, out)
	}
	segno, err := n.SegNo(srv.SegmentSize)
	if err != nil {
		return errorf(http.StatusBadRequest, api.CodeBadRequest, "%v", err)
	}
	segs, err := s.o.Repo.Catalog.Peek(c.Request().Context(), srv.ID, n.TimeLine, segno, count)
	if err != nil {
		return err
	}
	for _, seg := range segs {
		out.Segments = append(out.Segments, api.PeekSegment{Name: seg.Name, Size: seg.Size, Checksum: seg.Checksum})
	}
	return c.JSON(http.StatusOK, out)
}

// acceptsZstd reports whether the request's Accept-Encoding allows zstd.
func acceptsZstd(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for _, part := range strings.Split(v, ",") {
			enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.TrimSpace(enc) == "zstd" && strings.ReplaceAll(strings.TrimSpace(params), " ", "") != "q=0" {
				return true
			}
		}
	}
	return false
}

// Decoders for identity-encoded segments. Each holds a zstd window (1 MiB for
// the receiver's frames, up to 8 MiB for older versions'): at most maxDecoders
// decode at once, a request beyond that waits up to decoderWait and then gets
// a 503, and only idleDecoders are kept between requests, so a burst of such
// requests leaves no lasting heap.
const (
	maxDecoders  = 8
	idleDecoders = 2
	decoderWait  = 30 * time.Second
)

type decoderPool struct {
	slots chan struct{}
	idle  chan *zstd.Decoder
}

func newDecoderPool() *decoderPool {
	return &decoderPool{slots: make(chan struct{}, maxDecoders), idle: make(chan *zstd.Decoder, idleDecoders)}
}

// get returns a decoder once one of the maxDecoders slots is free.
func (p *decoderPool) get(ctx context.Context) (*zstd.Decoder, error) {
	t := time.NewTimer(decoderWait)
	defer t.Stop()
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, errorf(http.StatusServiceUnavailable, api.CodeUnavailable,
			"every decoder is busy (%d identity-encoded downloads): retry, or accept zstd (Accept-Encoding: zstd)", maxDecoders)
	}
	select {
	case d := <-p.idle:
		return d, nil
	default:
	}
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(walname.MaxSegmentSize))
	if err != nil {
		<-p.slots
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return d, nil
}

// put gives a decoder back, keeping it only when fewer than idleDecoders are kept.
func (p *decoderPool) put(d *zstd.Decoder) {
	d.Reset(nil)
	select {
	case p.idle <- d:
	default:
		d.Close()
	}
	<-p.slots
}
