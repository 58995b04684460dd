package bench

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/test/s3test"
)

// delayProxy serves target's HTTP API behind a proxy that sleeps delay before
// passing on each request: one added delay per response, the model of a hub
// or bucket on another site. With tls the proxy speaks HTTPS (httptest's
// certificate for 127.0.0.1) to its clients and plain HTTP to target. The
// proxy keeps the request's Host header, so an S3 request signed for the
// proxy's address still verifies at target. It returns the proxy's URL.
func delayProxy(b *testing.B, target string, delay time.Duration, tls bool) string {
	b.Helper()
	u, err := url.Parse(target)
	if err != nil {
		b.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		proxy.ServeHTTP(w, r)
	}))
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	b.Cleanup(srv.Close)
	return srv.URL
}

// pgBackRest is the stock tool the issue names for replay across a WAN:
// pgBackRest's archive-get in async mode (it prefetches into its spool, as
// walfetch does), from a repository in an S3 bucket (versitygw), reached
// through delayProxy because pgBackRest speaks S3 over HTTPS only.
type pgBackRest struct {
	bin, conf string
	// bucket is versitygw's plain HTTP endpoint; loopback its TLS proxy
	// without delay, which the setup used.
	bucket, loopback string
}

// dataDirVar in a run's restore_command stands for the standby's data directory.
const dataDirVar = "{datadir}"

// pgBackRestInstall is what a Debian machine lacking pgBackRest runs.
const pgBackRestInstall = "apt-get install -y pgbackrest"

// newPgBackRest makes a stanza for primary in a bucket of its own and pushes
// every WAL file in archive into it with archive-push, as the primary's
// archive_command would have. prefetch and parallel are walfetch's defaults,
// given to pgBackRest as its queue (in segments of segMB) and process-max.
func newPgBackRest(b *testing.B, primary *pgtest.Cluster, archive string, segMB, prefetch, parallel int) *pgBackRest {
	b.Helper()
	bin, err := exec.LookPath("pgbackrest")
	if err != nil {
		b.Fatalf("BENCH_PGBACKREST needs pgbackrest on PATH (on Debian: %s)", pgBackRestInstall)
	}
	bucket := s3test.Start(b)
	dir := pgtest.TempDir(b, "pgbackrest")
	loopback := delayProxy(b, bucket.Endpoint, 0, true)
	endpoint, err := url.Parse(loopback)
	if err != nil {
		b.Fatal(err)
	}
	p := &pgBackRest{bin: bin, conf: filepath.Join(dir, "pgbackrest.conf"), bucket: bucket.Endpoint, loopback: loopback}
	conf := strings.Join([]string{
		"[global]",
		"repo1-type=s3",
		"repo1-path=/pgbackrest",
		"repo1-s3-bucket=" + bucket.Bucket,
		"repo1-s3-endpoint=" + endpoint.Hostname(),
		"repo1-storage-port=" + endpoint.Port(),
		"repo1-s3-region=" + s3test.Region,
		"repo1-s3-key=" + s3test.AccessKeyID,
		"repo1-s3-key-secret=" + s3test.SecretAccessKey,
		"repo1-s3-uri-style=path",
		"repo1-storage-verify-tls=n",
		"compress-type=zst",
		"compress-level=1",
		"lock-path=" + filepath.Join(dir, "lock"),
		"spool-path=" + filepath.Join(dir, "spool"),
		"log-level-console=warn",
		"log-level-file=off",
		fmt.Sprintf("archive-get-queue-max=%dMiB", prefetch*segMB),
		fmt.Sprintf("process-max=%d", parallel),
		"",
		"[bench]",
		"pg1-path=" + primary.DataDir,
		fmt.Sprintf("pg1-port=%d", primary.Port),
		"pg1-socket-path=" + primary.SocketDir,
		"",
	}, "\n")
	if err := os.WriteFile(p.conf, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	pgtest.Chown(b, dir)
	p.run(b, "stanza-create")
	entries, err := os.ReadDir(archive)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			p.run(b, "archive-push", filepath.Join(archive, e.Name()))
		}
	}
	return p
}

// run runs a pgBackRest command as the postgres user for the stanza.
func (p *pgBackRest) run(b *testing.B, args ...string) {
	b.Helper()
	cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--", p.bin, "--config=" + p.conf, "--stanza=bench"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("pgbackrest %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// restoreCommand is the restore_command of a standby fetching through
// endpoint (the bucket's TLS proxy, with or without delay): archive-get in
// async mode, with dataDirVar in place of the standby's data directory (its
// pg1-path), which the replay loop fills in per round. The spool and the lock
// live in the data directory, so that no round starts with what an earlier
// round's async process fetched.
func (p *pgBackRest) restoreCommand(endpoint string) string {
	u, _ := url.Parse(endpoint)
	return fmt.Sprintf(`%s --config=%s --stanza=bench --archive-async --repo1-s3-endpoint=%s --repo1-storage-port=%s --pg1-path=%[5]s --spool-path=%[5]s/pgbackrest-spool --lock-path=%[5]s/pgbackrest-lock archive-get %%f "%%p"`,
		p.bin, p.conf, u.Hostname(), u.Port(), dataDirVar)
}
