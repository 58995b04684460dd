// Package client is the Go client of walhub's HTTP hub, for walfetch and for
// restores run on another host. It verifies what it downloads (size and
// checksum of WAL, size and SHA-256 of backup files) and sorts failures into
// the cases a caller must tell apart: not found, unknown server, unreachable,
// refused, corrupt. It deliberately imports neither the catalog nor SQLite,
// so the programs using it stay small and start fast.
package client

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/walhub/walhub/checksum"
	"github.com/walhub/walhub/hub/api"
)

// The kinds of failure; every error the client returns wraps exactly one.
var (
	// ErrNotFound: the hub answered that the file or backup does not exist.
	ErrNotFound = errors.New("not in the hub")
	// ErrUnknownServer: the hub holds nothing for the server asked for.
	ErrUnknownServer = errors.New("server unknown to the hub")
	// ErrUnreachable: no answer (connection refused, timeout, reset) or a
	// server-side failure (5xx): worth retrying.
	ErrUnreachable = errors.New("hub unreachable")
	// ErrRefused: the hub refused the request (bad token, malformed request):
	// retrying will not help; the configuration must change.
	ErrRefused = errors.New("hub refused the request")
	// ErrCorrupt: what arrived does not match its size or checksum.
	ErrCorrupt = errors.New("download failed verification")
)

// Options configure a Client.
type Options struct {
	// URL is the hub's base URL, e.g. "https://walhub.example:7480".
	URL string
	// Server is the name of the PostgreSQL server in the hub.
	Server string
	// Token is sent as a bearer token; empty sends none.
	Token string
	// CAFile is a PEM file of certificate authorities to trust for https, in
	// addition to the system's.
	CAFile string
	// Timeout bounds each request's wait for response headers (default 30s).
	// Bodies are bounded by the caller's context.
	Timeout time.Duration
	// MaxConns is how many connections to keep open to the hub (default 4).
	MaxConns int
	// UserAgent identifies the program (default "walhub-client").
	UserAgent string
	// ReadBuffer is the read buffer of each connection (default 256 KiB).
	// Reads at least this large bypass it.
	ReadBuffer int
}

// Client talks to one hub about one server. It is safe for concurrent use.
type Client struct {
	base   string
	server string
	token  string
	ua     string
	http   *http.Client
}

// New checks the options and makes a client. It does not connect.
func New(o Options) (*Client, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("hub URL %q: want http://host:port or https://host:port", o.URL)
	}
	if o.Server == "" {
		return nil, errors.New("no server name given")
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	if o.MaxConns == 0 {
		o.MaxConns = 4
	}
	if o.UserAgent == "" {
		o.UserAgent = "walhub-client"
	}
	if o.ReadBuffer == 0 {
		// Segments are megabytes: large buffers save thousands of syscalls each.
		o.ReadBuffer = 256 << 10
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		MaxIdleConnsPerHost:   o.MaxConns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: o.Timeout,
		ReadBufferSize:        o.ReadBuffer,
		TLSHandshakeTimeout:   o.Timeout,
		ForceAttemptHTTP2:     false,
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", o.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &Client{base: strings.TrimRight(u.String(), "/"), server: o.Server, token: o.Token, ua: o.UserAgent,
		http: &http.Client{Transport: tr, CheckRedirect: refuseRedirect}}, nil
}

// Server is the server name the client asks about.
func (c *Client) Server() string { return c.server }

// URL is the hub's base URL.
func (c *Client) URL() string { return c.base }

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// do sends a GET and returns the response when it is 200; any other answer is
// turned into an error of the right kind and the body closed.
func (c *Client) do(ctx context.Context, path string, header http.Header) (*http.Response, error) {
	return c.send(ctx, http.MethodGet, path, header, nil)
}

// send is do for any method, with an optional body.
func (c *Client) send(ctx context.Context, method, path string, header http.Header, reqBody io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, reqBody)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.ua)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	var redirect *redirectError
	if errors.As(err, &redirect) {
		return nil, fmt.Errorf("%w: %s %s%s: %w", ErrRefused, method, c.base, path, redirect)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %s %s: %w", ErrUnreachable, method, path, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %s %s%s: %w", ErrUnreachable, method, c.base, path, unwrapURLError(err))
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	var body api.ErrorBody
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(raw, &body) != nil || body.Error == "" {
		body.Error = strings.TrimSpace(string(raw))
		if len(body.Error) > 200 {
			body.Error = body.Error[:200]
		}
	}
	msg := fmt.Sprintf("%s %s%s: %s: %s", method, c.base, path, resp.Status, body.Error)
	switch {
	case resp.StatusCode == http.StatusNotFound && body.Code == api.CodeUnknownServer:
		return nil, fmt.Errorf("%w: %s", ErrUnknownServer, msg)
	case resp.StatusCode == http.StatusNotFound && body.Code == api.CodeNotFound:
		return nil, fmt.Errorf("%w: %s", ErrNotFound, msg)
	case resp.StatusCode == http.StatusNotFound:
		// A 404 without our error body is not the hub speaking (a proxy, a wrong URL).
		return nil, fmt.Errorf("%w: %s (is %s a walhub hub?)", ErrRefused, msg, c.base)
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, msg)
	}
	return nil, fmt.Errorf("%w: %s", ErrRefused, msg)
}

// redirectError is a redirect the client refused to follow.
type redirectError struct{ from, to *url.URL }

func (e *redirectError) Error() string {
	return fmt.Sprintf("the hub at %s redirects to %s: walhub's client follows no redirect (it would carry the token "+
		"to another origin, or over plain http); give the URL the hub answers at (hub url, or the proxy's)", e.from.Redacted(), e.to.Redacted())
}

// refuseRedirect stops every redirect: the request is not sent again, to
// another origin or the same, with or without the token. walfetch must get
// WAL from the hub it was told, and the token must never travel elsewhere.
func refuseRedirect(req *http.Request, via []*http.Request) error {
	return &redirectError{from: via[len(via)-1].URL, to: req.URL}
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// WALInfo describes a WAL file that was fetched.
type WALInfo struct {
	// Size and Checksum are of the uncompressed bytes, as verified.
	Size     int64
	Checksum string
	// SystemID and SegmentSize identify the server the file comes from.
	SystemID    string
	SegmentSize uint64
}

// FetchWAL downloads a WAL file (segment, .history, or .partial when named so)
// and writes its uncompressed bytes to w. It returns nil only when every byte
// arrived and the size and checksum match what the hub recorded; on any error
// w holds garbage and must be thrown away.
func (c *Client) FetchWAL(ctx context.Context, name string, w io.Writer) (WALInfo, error) {
	return c.FetchWALThrough(ctx, name, w, nil)
}

// FetchWALThrough is FetchWAL reading the response body through
// wrap(body) when wrap is not nil: every read from the network goes through
// the reader wrap returns, which must pass the bytes and errors on unchanged
// (the prefetcher orders its downloads' work between reads so).
func (c *Client) FetchWALThrough(ctx context.Context, name string, w io.Writer, wrap func(io.Reader) io.Reader) (WALInfo, error) {
	resp, err := c.do(ctx, api.WALPath(c.server, name), http.Header{"Accept-Encoding": {"zstd"}})
	if err != nil {
		return WALInfo{}, err
	}
	defer resp.Body.Close()
	info := WALInfo{Checksum: resp.Header.Get(api.HeaderChecksum), SystemID: resp.Header.Get(api.HeaderSystemID)}
	info.SegmentSize, _ = strconv.ParseUint(resp.Header.Get(api.HeaderSegmentSize), 10, 64)
	info.Size, err = strconv.ParseInt(resp.Header.Get(api.HeaderSize), 10, 64)
	if err != nil || info.Size < 0 {
		return info, fmt.Errorf("%w: %s: the hub sent no valid %s header", ErrCorrupt, name, api.HeaderSize)
	}
	want, err := checksum.Parse(info.Checksum)
	if err != nil {
		return info, fmt.Errorf("%w: %s: %v", ErrCorrupt, name, err)
	}
	var body io.Reader = resp.Body
	if wrap != nil {
		body = wrap(body)
	}
	transport := &errorReader{r: body}
	h := checksum.New()
	dst := &errorWriter{w: w}
	// The bytes go to w and the checksum at once; more than announced is
	// refused as it arrives.
	out := &sizeLimit{w: io.MultiWriter(dst, h), left: info.Size}
	var n int64
	switch enc := resp.Header.Get("Content-Encoding"); enc {
	case "", "identity":
		buffered := bufio.NewWriterSize(out, 256<<10)
		n, err = io.Copy(buffered, transport)
		if ferr := buffered.Flush(); err == nil {
			err = ferr
		}
	case "zstd":
		dec := getDecoder()
		defer putDecoder(dec)
		if err := dec.Reset(transport); err != nil {
			return info, fmt.Errorf("%w: %s: %v", ErrCorrupt, name, err)
		}
		// WriteTo hands over the decoder's own blocks: no copy into a
		// buffer of ours in between (a 16 MiB segment is 16 MiB less memmove).
		n, err = dec.WriteTo(out)
	default:
		return info, fmt.Errorf("%w: %s: unexpected Content-Encoding %q", ErrCorrupt, name, enc)
	}
	switch {
	case dst.err != nil:
		return info, fmt.Errorf("write %s: %w", name, dst.err)
	case out.over:
		return info, fmt.Errorf("%w: %s: got more than the %d bytes the hub announced", ErrCorrupt, name, info.Size)
	case transport.err != nil && ctx.Err() != nil:
		return info, fmt.Errorf("%w: download %s: %w", ErrUnreachable, name, ctx.Err())
	case transport.err != nil:
		return info, fmt.Errorf("%w: download %s: %w", ErrUnreachable, name, transport.err)
	case err != nil:
		// The bytes arrived but do not decode.
		return info, fmt.Errorf("%w: %s: %v", ErrCorrupt, name, err)
	}
	if n != info.Size {
		return info, fmt.Errorf("%w: %s: got %d bytes, the hub announced %d", ErrCorrupt, name, n, info.Size)
	}
	if got := h.Sum32(); got != want {
		return info, fmt.Errorf("%w: %s: checksum %s, the hub recorded %s", ErrCorrupt, name, checksum.Format(got), info.Checksum)
	}
	return info, nil
}

// decoders are reused: a zstd decoder's buffers are as large as a segment's
// window, and a prefetcher decodes segment after segment. A free list rather
// than a sync.Pool, which every garbage collection empties.
var decoders = make(chan *zstd.Decoder, 16)

func getDecoder() *zstd.Decoder {
	select {
	case d := <-decoders:
		return d
	default:
	}
	// The frame's own checksum is skipped: the CRC-32C of the result is checked.
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(2<<30), zstd.IgnoreChecksum(true))
	if err != nil {
		panic(fmt.Sprintf("zstd decoder with constant options: %v", err))
	}
	return d
}

func putDecoder(d *zstd.Decoder) {
	if d.Reset(nil) != nil {
		return
	}
	select {
	case decoders <- d:
	default:
		d.Close()
	}
}

// sizeLimit passes at most left bytes to w and fails the write that would
// pass more: a body longer than announced is corrupt, whatever it holds.
type sizeLimit struct {
	w    io.Writer
	left int64
	over bool
}

// errOverlong stops a copy at the first byte beyond the announced size.
var errOverlong = errors.New("more bytes than announced")

func (s *sizeLimit) Write(p []byte) (int, error) {
	if int64(len(p)) > s.left {
		s.over = true
		return 0, errOverlong
	}
	n, err := s.w.Write(p)
	s.left -= int64(n)
	return n, err
}

// errorReader remembers the transport's read error, to tell "the bytes
// stopped coming" (unreachable) from "the bytes do not decode" (corrupt).
type errorReader struct {
	r   io.Reader
	err error
}

func (e *errorReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// errorWriter remembers the destination's write error (a full disk is
// neither the hub's fault nor corruption).
type errorWriter struct {
	w   io.Writer
	err error
}

func (e *errorWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

// Peek asks which segments, starting at name, the hub holds now on name's
// timeline: up to n, capped by the hub.
func (c *Client) Peek(ctx context.Context, name string, n int) (api.Peek, error) {
	var p api.Peek
	err := c.getJSON(ctx, api.PeekPath(c.server, name, n), &p)
	return p, err
}

// Backups lists the server's backups, oldest first.
func (c *Client) Backups(ctx context.Context) ([]api.Backup, error) {
	var out []api.Backup
	err := c.getJSON(ctx, api.BackupsPath(c.server), &out)
	return out, err
}

// Backup describes one backup.
func (c *Client) Backup(ctx context.Context, id string) (api.Backup, error) {
	var out api.Backup
	err := c.getJSON(ctx, api.BackupPath(c.server, id), &out)
	return out, err
}

// Status returns the server's status document as the hub sends it.
func (c *Client) Status(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	err := c.getJSON(ctx, api.StatusPath(c.server), &out)
	return out, err
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.do(ctx, path, http.Header{"Accept": {"application/json"}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(v); err != nil {
		return fmt.Errorf("%w: GET %s: decode answer: %w", ErrUnreachable, path, err)
	}
	return nil
}

// DownloadBackupFile writes one stored file of a backup to w, as stored
// (compressed as the backup says). It returns the bytes written, and an error
// wrapping ErrCorrupt when the length or the SHA-256 the hub announced do not
// match what arrived.
func (c *Client) DownloadBackupFile(ctx context.Context, id, file string, w io.Writer) (int64, error) {
	resp, err := c.do(ctx, api.BackupFilePath(c.server, id, file), nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum hash.Hash
	wantSum := resp.Header.Get(api.HeaderSHA256Stored)
	dst := w
	if wantSum != "" {
		sum = sha256.New()
		dst = io.MultiWriter(w, sum)
	}
	n, err := io.Copy(dst, resp.Body)
	if err != nil {
		return n, fmt.Errorf("%w: download %s/%s: %w", ErrUnreachable, id, file, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("%w: %s/%s: got %d bytes, the hub announced %d", ErrCorrupt, id, file, n, resp.ContentLength)
	}
	if sum != nil {
		if got := hex.EncodeToString(sum.Sum(nil)); !strings.EqualFold(got, wantSum) {
			return n, fmt.Errorf("%w: %s/%s: SHA-256 %s, the hub recorded %s", ErrCorrupt, id, file, got, wantSum)
		}
	}
	return n, nil
}

// ChooseBackup asks the hub which backup a restore to a recovery target
// starts from (q: restore.Target.Query, plus "backup" for a named one).
func (c *Client) ChooseBackup(ctx context.Context, id string, q url.Values) (api.Backup, error) {
	q.Set("backup", id)
	var out api.Backup
	err := c.getJSON(ctx, api.ChooseBackupPath(c.server, q), &out)
	return out, err
}

// RestorePoints lists the restore points in the WAL the hub holds.
func (c *Client) RestorePoints(ctx context.Context) ([]api.RestorePoint, error) {
	var out []api.RestorePoint
	err := c.getJSON(ctx, api.RestorePointsPath(c.server), &out)
	return out, err
}
