// Package s3test starts a real S3-compatible server for tests: versitygw
// v1.8.0 with its posix backend over a temporary directory, on a free
// loopback port, with a bucket made. Tests can stop, kill and restart it (same
// port, same data) to see what walhub does while the bucket is unreachable.
// The server is killed and its directory removed when the test ends. A
// missing versitygw fails the test with the command that installs it;
// nothing is skipped.
package s3test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/walhub/walhub/storage/s3store"
	"github.com/walhub/walhub/test/pgtest"
)

// Install is the command that installs the server the tests use.
const Install = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// Credentials of the server's root account. Tests pass them to walhub through
// the environment or a file, as a user would.
const (
	AccessKeyID     = "walhub-test-key"
	SecretAccessKey = "walhub-test-secret-8d1f0c2e"
	Region          = "us-east-1"
)

// Binary finds versitygw: VERSITYGW, then PATH, then $(go env GOPATH)/bin.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("VERSITYGW"); p != "" {
		return p
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = string(trimNL(out))
		}
	}
	if gopath != "" {
		p := filepath.Join(gopath, "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("versitygw not found (on PATH, in $(go env GOPATH)/bin, or VERSITYGW): install it with `%s`", Install)
	return ""
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// Server is one running (or stopped) versitygw.
type Server struct {
	t      testing.TB
	bin    string
	root   string // the posix backend's directory: one subdirectory per bucket
	port   int
	log    *os.File
	cmd    *exec.Cmd
	exited chan struct{}

	// Endpoint is the S3 API's URL, http://127.0.0.1:<port>.
	Endpoint string
	// Bucket was created at start.
	Bucket string
}

// Start starts versitygw and creates the bucket "walhub".
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, bin: Binary(t), Bucket: "walhub"}
	s.root = pgtest.TempDir(t, "s3")
	s.port = pgtest.FreePort(t)
	s.Endpoint = "http://127.0.0.1:" + strconv.Itoa(s.port)
	log, err := os.Create(filepath.Join(s.root, "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	s.log = log
	data := filepath.Join(s.root, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			if b, err := os.ReadFile(log.Name()); err == nil && len(b) > 0 {
				t.Logf("versitygw log:\n%s", tail(b, 4000))
			}
		}
		log.Close()
	})
	s.Restart()
	client := s.Client()
	if _, err := client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: &s.Bucket}); err != nil {
		t.Fatalf("create bucket %s: %v", s.Bucket, err)
	}
	return s
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Restart starts the server again after Stop or Kill (same port, same data)
// and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatal("s3test: Restart of a running server")
	}
	cmd := exec.Command(s.bin,
		"--port", "127.0.0.1:"+strconv.Itoa(s.port),
		"--region", Region,
		"--health", "/health",
		"--quiet",
		"posix", filepath.Join(s.root, "data"))
	// The root credentials through the environment, not argv (ps shows argv).
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+AccessKeyID, "ROOT_SECRET_ACCESS_KEY="+SecretAccessKey)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start versitygw: %v", err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() { cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(s.Endpoint + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-s.exited:
			s.cmd = nil
			b, _ := os.ReadFile(s.log.Name())
			s.t.Fatalf("versitygw exited at start:\n%s", tail(b, 4000))
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("versitygw did not answer on %s within 15s", s.Endpoint)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the server with SIGTERM and waits for it.
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

// Kill ends the server with SIGKILL and waits for it.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

func (s *Server) signal(sig syscall.Signal) {
	if s.cmd == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, sig)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
	s.cmd = nil
	// Make sure the port no longer answers before returning.
	for i := 0; i < 100; i++ {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(s.port), 100*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
}

// Config is an s3store configuration for the bucket under prefix.
func (s *Server) Config(prefix string) s3store.Config {
	return s3store.Config{
		Bucket:          s.Bucket,
		Prefix:          prefix,
		Endpoint:        s.Endpoint,
		Region:          Region,
		PathStyle:       true,
		AccessKeyID:     AccessKeyID,
		SecretAccessKey: SecretAccessKey,
	}
}

// TOML is the configuration walhub needs for the bucket under prefix: the
// repository and work_dir lines and the [s3] section. The credentials go into
// files in credDir (mode 0600), read with "file:" as a user would.
func (s *Server) TOML(prefix, workDir, credDir string) string {
	s.t.Helper()
	key, secret := filepath.Join(credDir, "s3.key"), filepath.Join(credDir, "s3.secret")
	if err := os.WriteFile(key, []byte(AccessKeyID+"\n"), 0o600); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(secret, []byte(SecretAccessKey+"\n"), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return fmt.Sprintf(`repository = "s3://%s/%s"
work_dir = %q

[s3]
endpoint = %q
region = %q
force_path_style = true
access_key_id = "file:%s"
secret_access_key = "file:%s"
`, s.Bucket, prefix, workDir, s.Endpoint, Region, key, secret)
}

// Client is a raw S3 client of the server, for tests to look at the bucket
// behind walhub's back (pending multipart uploads, stray objects).
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: AccessKeyID, SecretAccessKey: SecretAccessKey}, nil
		}),
	})
}

// Objects lists every object key in the bucket under prefix.
func (s *Server) Objects(prefix string) []string {
	s.t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.Client(), &s3.ListObjectsV2Input{Bucket: &s.Bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			s.t.Fatalf("list objects: %v", err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

// PartsUploaded counts the parts the server holds of the multipart uploads
// begun and neither completed nor aborted.
func (s *Server) PartsUploaded() int {
	s.t.Helper()
	n := 0
	for _, u := range s.uploads() {
		parts, err := s.Client().ListParts(context.Background(), &s3.ListPartsInput{Bucket: &s.Bucket, Key: u.Key, UploadId: u.UploadId})
		if err != nil {
			s.t.Fatalf("list parts of %s: %v", aws.ToString(u.Key), err)
		}
		n += len(parts.Parts)
	}
	return n
}

// PendingUploads lists the keys of the multipart uploads begun and neither
// completed nor aborted.
func (s *Server) PendingUploads() []string {
	s.t.Helper()
	var keys []string
	for _, u := range s.uploads() {
		keys = append(keys, aws.ToString(u.Key))
	}
	return keys
}

// uploads lists the multipart uploads begun and neither completed nor aborted.
func (s *Server) uploads() []types.MultipartUpload {
	s.t.Helper()
	out, err := s.Client().ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: &s.Bucket})
	if err != nil {
		s.t.Fatalf("list multipart uploads: %v", err)
	}
	return out.Uploads
}
