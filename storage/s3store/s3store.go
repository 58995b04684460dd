// Package s3store keeps walhub's repository in an S3-compatible bucket: it
// implements storage.ObjectStore over the objects under one bucket and prefix.
//
// The client is aws-sdk-go-v2's service/s3. It is the reference S3 client, it
// speaks to any S3-compatible endpoint (BaseEndpoint, path-style addressing),
// and its standard retryer already tells transient failures (HTTP 500, 502,
// 503, 504, throttling, timeouts, connection resets and refusals) from final
// ones and retries them with capped, jittered exponential backoff; SigV4 and
// payload checksums are its business, not ours. minio-go would do as well; the
// AWS SDK was chosen because its retry policy is explicit and configurable
// per client (attempts, backoff cap, no client-side retry quota that would
// turn a long outage into instant failures).
//
// The multipart orchestration is in writer.go rather than in the SDK's upload
// manager: the manager pulls from an io.Reader (a pipe and a goroutine behind
// the handle-style ObjectWriter), feature/s3/manager is deprecated in favour
// of a transfer manager still at v0.x, and the two promises this package must
// keep (memory bounded by (concurrency+1) parts whatever the object's size;
// the upload aborted on every failure path) are easiest to check where they
// are written down.
package s3store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/walhub/walhub/storage"
)

// Defaults of Config fields left zero.
const (
	DefaultRegion      = "us-east-1"
	DefaultPartSize    = 16 << 20
	DefaultConcurrency = 4
	DefaultMaxAttempts = 6
	DefaultMaxBackoff  = 5 * time.Second
	// DefaultStallTimeout is how long a request body may go unread by the
	// connection, or a response body bring nothing, before the request is
	// abandoned and retried.
	DefaultStallTimeout = 30 * time.Second
	// DefaultResponseHeaderTimeout is how long a sent request may wait for
	// its answer: CompleteMultipartUpload of a large object may take a while
	// on some servers before the first byte of the answer.
	DefaultResponseHeaderTimeout = 2 * time.Minute
	// MinPartSize is S3's smallest part but the last.
	MinPartSize = 5 << 20
	// MaxParts is S3's most parts in one multipart upload.
	MaxParts = 10000
)

// Config says where the bucket is and how to reach it.
type Config struct {
	Bucket string
	// Prefix is prepended (with a "/") to every key; empty for the bucket's root.
	Prefix string
	// Endpoint is the S3 API's base URL (http:// or https://); empty for AWS.
	Endpoint string
	Region   string
	// PathStyle addresses the bucket as endpoint/bucket/key rather than
	// bucket.endpoint/key (most S3-compatible servers need it).
	PathStyle       bool
	AccessKeyID     string
	SecretAccessKey string
	// CAFile is a PEM file of CA certificates trusted besides the system's.
	CAFile string
	// PartSize is the size of one multipart part, and the size up to which an
	// object is sent as one PUT. At least MinPartSize.
	PartSize int64
	// Concurrency is how many parts of one object are sent at once. One
	// object's writer holds at most Concurrency+1 part buffers.
	Concurrency int
	// MaxAttempts and MaxBackoff bound the retries of one request.
	MaxAttempts int
	MaxBackoff  time.Duration
	// StallTimeout abandons (and retries) a request whose body the
	// connection stops taking, or whose response body stops arriving, for
	// that long: a silently dropped connection. It bounds progress, not a
	// whole transfer. Zero is DefaultStallTimeout.
	StallTimeout time.Duration
	// ResponseHeaderTimeout abandons (and retries) a request sent whole but
	// not answered. Zero is DefaultResponseHeaderTimeout.
	ResponseHeaderTimeout time.Duration
	// ReadOnly refuses Create and Remove (a second hub serving the bucket).
	ReadOnly bool
}

// String names the bucket, never the credentials.
func (c Config) String() string {
	s := "s3://" + c.Bucket
	if c.Prefix != "" {
		s += "/" + c.Prefix
	}
	if c.Endpoint != "" {
		s += " at " + c.Endpoint
	}
	return s
}

// GoString is String, so that %#v cannot print the secret either.
func (c Config) GoString() string { return c.String() }

// Store is a storage.ObjectStore in an S3 bucket.
type Store struct {
	client *s3.Client
	cfg    Config
	spares chan []byte // part buffers that finished writers gave back
}

var _ storage.ObjectStore = (*Store)(nil)

// New makes a Store. It does not contact the bucket: a hub must start, and
// say why it cannot store, while the bucket is unreachable.
func New(cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3: no bucket")
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < MinPartSize {
		return nil, fmt.Errorf("s3: part size %d is below S3's minimum of %d bytes", cfg.PartSize, MinPartSize)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	if cfg.ResponseHeaderTimeout <= 0 {
		cfg.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	if cfg.AccessKeyID == "" || cfg.SecretAccessKey == "" {
		return nil, errors.New("s3: access key id and secret access key are both required")
	}
	httpClient, err := newHTTPClient(cfg.CAFile, cfg.ResponseHeaderTimeout)
	if err != nil {
		return nil, err
	}
	opts := s3.Options{
		Region:       cfg.Region,
		UsePathStyle: cfg.PathStyle,
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, ""),
		HTTPClient:   &stallClient{next: httpClient, timeout: cfg.StallTimeout},
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = cfg.MaxAttempts
			o.MaxBackoff = cfg.MaxBackoff
			// The default token bucket fails retries outright after a burst of
			// failures; an outage of the bucket must be waited out instead.
			o.RateLimiter = ratelimit.None
		}),
		// No flexible checksums (x-amz-checksum-*) unless an operation
		// requires them: several S3-compatible servers refuse or mishandle
		// them. In transit, TLS protects the payload (over plain http the SDK
		// signs its SHA-256, which the server checks); at rest, walhub checks
		// what it reads against its own CRC-32C (segments) and the backup
		// manifest.
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
	}
	if cfg.Endpoint != "" {
		opts.BaseEndpoint = aws.String(cfg.Endpoint)
	}
	return &Store{client: s3.New(opts), cfg: cfg, spares: make(chan []byte, cfg.Concurrency+1)}, nil
}

// newHTTPClient bounds connecting and waiting for response headers, never a
// whole transfer (a backup's GET streams for as long as it takes); progress
// within a transfer is stallClient's.
func newHTTPClient(caFile string, responseHeaderTimeout time.Duration) (*awshttp.BuildableClient, error) {
	var roots *x509.CertPool
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("s3: read CA file: %w", err)
		}
		roots, err = x509.SystemCertPool()
		if err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("s3: CA file %s holds no PEM certificate", caFile)
		}
	}
	return awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = 10 * time.Second }).
		WithTransportOptions(func(tr *http.Transport) {
			tr.TLSHandshakeTimeout = 10 * time.Second
			tr.ResponseHeaderTimeout = responseHeaderTimeout
			tr.MaxIdleConnsPerHost = 32
			if roots != nil {
				if tr.TLSClientConfig == nil {
					tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
				}
				tr.TLSClientConfig.RootCAs = roots
			}
		}), nil
}

// String implements storage.ObjectStore.
func (s *Store) String() string { return s.cfg.String() }

// Features implements storage.ObjectStore.
func (s *Store) Features() storage.Features {
	return storage.Features{MultipartUpload: true}
}

// objectKey is the bucket key of a repository key.
func (s *Store) objectKey(key string) (string, error) {
	if err := storage.ValidKey(key); err != nil {
		return "", err
	}
	if s.cfg.Prefix == "" {
		return key, nil
	}
	return s.cfg.Prefix + "/" + key, nil
}

// repoKey is the repository key of a bucket key from a listing.
func (s *Store) repoKey(objectKey string) string {
	if s.cfg.Prefix == "" {
		return objectKey
	}
	return strings.TrimPrefix(objectKey, s.cfg.Prefix+"/")
}

// Stat implements storage.ObjectStore.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	ok, err := s.objectKey(key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.cfg.Bucket, Key: &ok})
	if err != nil {
		return storage.ObjectInfo{}, s.wrap("stat", key, err)
	}
	return storage.ObjectInfo{
		Key:     key,
		Size:    aws.ToInt64(out.ContentLength),
		ModTime: aws.ToTime(out.LastModified),
		Meta:    storage.Meta(out.Metadata),
	}, nil
}

// Remove implements storage.ObjectStore.
func (s *Store) Remove(ctx context.Context, key string) error {
	if s.cfg.ReadOnly {
		return fmt.Errorf("remove %s: %w", key, storage.ErrReadOnly)
	}
	ok, err := s.objectKey(key)
	if err != nil {
		return err
	}
	_, err = s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.cfg.Bucket, Key: &ok})
	if err != nil && !isNotFound(err) {
		return s.wrap("remove", key, err)
	}
	return nil
}

// List implements storage.ObjectStore. S3 lists in UTF-8 byte order, which is
// Go's string order, a page of up to 1000 keys at a time. A listing carries
// no user metadata: Meta is nil, Stat has it. Keys that are not valid
// repository keys (put there by something else) are left out.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	full := prefix
	if s.cfg.Prefix != "" {
		full = s.cfg.Prefix + "/" + prefix
	}
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.cfg.Bucket, Prefix: &full})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return s.wrap("list", prefix, err)
		}
		for _, obj := range page.Contents {
			key := s.repoKey(aws.ToString(obj.Key))
			if storage.ValidKey(key) != nil {
				continue
			}
			info := storage.ObjectInfo{Key: key, Size: aws.ToInt64(obj.Size), ModTime: aws.ToTime(obj.LastModified)}
			if err := fn(info); err != nil {
				return err
			}
		}
	}
	return nil
}

// wrap gives an SDK error the operation and key, and ErrNotExist when the
// object is missing (a missing bucket is not a missing object: it is a
// configuration error and must not look like "segment not archived").
func (s *Store) wrap(op, key string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("%s %s in %s: %w", op, key, s, storage.ErrNotExist)
	}
	var netErr net.Error
	if errors.As(err, &netErr) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		// Said first: the SDK's message buries it at its end.
		return fmt.Errorf("%s %s in %s: cannot reach the bucket: %w", op, key, s, err)
	}
	return fmt.Errorf("%s %s in %s: %w", op, key, s, err)
}

func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "NoSuchBucket", "NoSuchUpload":
			return false
		case "NoSuchKey", "NotFound":
			return true
		}
	}
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound && !hasCode(err, "NoSuchBucket")
}

func hasCode(err error, code string) bool {
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode() == code
}

// RemoveTemp aborts the multipart uploads below prefix that a writer which
// died (kill -9) left incomplete: they are invisible, but the bucket keeps
// (and bills) their parts until aborted. Call it only where no writer can be
// active under prefix (storage.TempRemover).
func (s *Store) RemoveTemp(ctx context.Context, prefix string) error {
	if s.cfg.ReadOnly {
		return nil
	}
	full := prefix
	if s.cfg.Prefix != "" {
		full = s.cfg.Prefix + "/" + prefix
	}
	in := &s3.ListMultipartUploadsInput{Bucket: &s.cfg.Bucket, Prefix: &full}
	for {
		out, err := s.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return s.wrap("list multipart uploads of", prefix, err)
		}
		for _, u := range out.Uploads {
			_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.cfg.Bucket, Key: u.Key, UploadId: u.UploadId})
			if err != nil && !hasCode(err, "NoSuchUpload") {
				return s.wrap("abort multipart upload of", s.repoKey(aws.ToString(u.Key)), err)
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			return nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}
