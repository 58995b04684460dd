// Package test holds walhub's end-to-end tests: the real walhub and walfetch
// binaries against real PostgreSQL 15 clusters made by test/pgtest.
package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/stream"
	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/walname"
)

// binDir holds walhub and walfetch, built once for the whole package, in a
// directory the postgres user can read (walfetch runs as restore_command).
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "walhub-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Chmod(dir, 0o755)
	for _, cmd := range []string{"walhub", "walfetch"} {
		if _, err := pgtest.BuildCommand(dir, cmd); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// site is one primary and a walhub daemon streaming from it.
type site struct {
	t       *testing.T
	primary *pgtest.Cluster
	dir     string // postgres-accessible scratch directory
	// tokenFile holds the read token, for walfetch (--walfetch-token-file).
	tokenFile string
	repo      string
	config    string
	hubURL    string
	serve     *exec.Cmd
	// readOnly: the hub is read_only (no [[server]], no receiver).
	readOnly bool
	logMu    sync.Mutex
	log      strings.Builder
}

// newSite starts a primary (extra postgresql.conf lines in conf) and a
// walhub serve process with one server called "main".
func newSite(t *testing.T, opts pgtest.Options) *site {
	t.Helper()
	p := pgtest.NewPrimary(t, "primary", opts)
	return newSiteOn(t, p, p)
}

// newSiteOn starts a walhub serve process whose server "main" is source (the
// primary p, or one of its standbys: the hub then streams from and backs up
// that standby); s.primary is p, where writes and WAL switches go. Lines in
// serverConf are added to the server's section (e.g. "synchronous = true").
func newSiteOn(t *testing.T, p, source *pgtest.Cluster, serverConf ...string) *site {
	return newSiteWith(t, p, source, nil, serverConf...)
}

// newSiteWith is newSiteOn with the repository's lines of the configuration
// (top-level keys and sections before [hub]) from repository, which also sets
// s.repo to the directory that holds catalog.db; nil is a local repository.
func newSiteWith(t *testing.T, p, source *pgtest.Cluster, repository func(s *site) string, serverConf ...string) *site {
	t.Helper()
	s := &site{t: t, primary: p, dir: pgtest.TempDir(t, "site")}
	if repository == nil {
		repository = func(s *site) string {
			s.repo = filepath.Join(s.dir, "repo")
			return fmt.Sprintf("repository = %q\n", s.repo)
		}
	}
	repoTOML := repository(s)
	port := pgtest.FreePort(t)
	s.hubURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	s.config = filepath.Join(s.dir, "walhub.toml")
	cfg := fmt.Sprintf(`%s
[hub]
listen = "127.0.0.1:%d"
read_tokens = ["read-secret"]
admin_tokens = ["admin-secret"]
[[server]]
name = "main"
conninfo = %q
%s
[server.backup]
wal_timeout = "2m"
`, repoTOML, port, source.ConnString(""), strings.Join(serverConf, "\n"))
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.tokenFile = filepath.Join(s.dir, "read.token")
	if err := os.WriteFile(s.tokenFile, []byte("read-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, s.tokenFile)
	s.startServe()
	return s
}

// startServe starts `walhub serve` and waits for the hub to answer.
func (s *site) startServe() {
	s.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "walhub"), "serve", "--init", "--config", s.config)
	pr, pw, _ := os.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	pw.Close()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			s.logMu.Lock()
			s.log.WriteString(sc.Text() + "\n")
			s.logMu.Unlock()
		}
	}()
	s.serve = cmd
	s.t.Cleanup(func() {
		s.stopServe()
		if s.t.Failed() {
			s.logMu.Lock()
			l := s.log.String()
			s.logMu.Unlock()
			if len(l) > 8000 {
				l = l[len(l)-8000:]
			}
			s.t.Logf("--- walhub serve log:\n%s", l)
		}
	})
	pgtest.WaitFor(s.t, 60*time.Second, "the hub to answer", func() bool {
		out, err := exec.Command("curl", "-sf", s.hubURL+"/healthz").Output()
		return err == nil && strings.TrimSpace(string(out)) == "ok"
	})
	if s.readOnly {
		return // no receiver: a read-only hub follows the repository another writes
	}
	// walhub backup refuses to run until this daemon's receiver has said it runs.
	pgtest.WaitFor(s.t, 60*time.Second, "the receiver to write its state", func() bool {
		var st stream.State
		data, err := os.ReadFile(filepath.Join(s.repo, filepath.FromSlash(storage.ReceiverStatePath("main"))))
		return err == nil && json.Unmarshal(data, &st) == nil && st.PID == cmd.Process.Pid && st.State != "stopped"
	})
}

// stopServe stops the daemon with SIGTERM and waits for it.
func (s *site) stopServe() {
	if s.serve == nil {
		return
	}
	s.serve.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.serve.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		s.serve.Process.Kill()
		<-done
	}
	s.serve = nil
}

// walhub runs the walhub CLI with the site's config and returns its output;
// it fails the test when the command fails.
func (s *site) walhub(args ...string) string {
	s.t.Helper()
	out, err := s.tryWalhub(args...)
	if err != nil {
		s.t.Fatalf("walhub %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// tryWalhub runs the walhub CLI and returns its output and error. A restore
// run as root gives its files to postgres (--owner), as an operator must.
func (s *site) tryWalhub(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if len(args) > 0 && args[0] == "restore" && os.Geteuid() == 0 && !slices.Contains(args, "--owner") {
		args = append(args, "--owner", "postgres")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "walhub"), append(args, "--config", s.config)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// waitArchived switches WAL on the primary and waits until the hub holds
// every segment up to the current position.
func (s *site) waitArchived() walname.LSN {
	s.t.Helper()
	lsn := s.primary.CurrentLSN()
	s.primary.SwitchWAL()
	cat, err := catalog.Open(context.Background(), filepath.Join(s.repo, storage.CatalogFile))
	if err != nil {
		s.t.Fatal(err)
	}
	defer cat.Close()
	pgtest.WaitFor(s.t, 120*time.Second, fmt.Sprintf("the hub to hold WAL up to %s", lsn), func() bool {
		srv, err := cat.ServerByName(context.Background(), "main")
		if err != nil || srv.SegmentSize == 0 {
			return false
		}
		last, err := cat.LastSegment(context.Background(), srv.ID)
		return err == nil && walname.SegmentStart(last.SegNo+1, srv.SegmentSize) >= lsn
	})
	return lsn
}

// checksum is a fingerprint of the pgbench data.
const checksum = `SELECT md5(string_agg(aid::text || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts`

// startRestored starts a restored data directory as a cluster and waits until
// it accepts connections (recovery may still run).
func startRestored(t *testing.T, name, dataDir string, extraDirs ...string) *pgtest.Cluster {
	t.Helper()
	for _, d := range extraDirs {
		pgtest.Chown(t, d)
	}
	c := pgtest.AdoptDataDir(t, name, dataDir)
	c.Start()
	return c
}

// waitPromoted waits until a restored cluster has left recovery.
func waitPromoted(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	c.WaitFor(180*time.Second, c.Name+" to finish recovery", func() bool {
		out, err := c.TryQuery("SELECT pg_is_in_recovery()")
		return err == nil && out == "f"
	})
}
