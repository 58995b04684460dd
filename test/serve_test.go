package test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walhub/walhub/test/pgtest"
)

// logContains reports whether the daemon's log holds s.
func (s *site) logContains(sub string) bool {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return strings.Contains(s.log.String(), sub)
}

// logCount counts the daemon's log lines holding sub.
func (s *site) logCount(sub string) int {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return strings.Count(s.log.String(), sub)
}

// reload writes cfg as the daemon's configuration, sends SIGHUP and waits
// for the daemon to log the outcome containing want.
func (s *site) reload(cfg, want string) {
	s.t.Helper()
	before := s.logCount(want)
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		s.t.Fatal(err)
	}
	if err := s.serve.Process.Signal(syscall.SIGHUP); err != nil {
		s.t.Fatal(err)
	}
	pgtest.WaitFor(s.t, 30*time.Second, "the daemon to log "+want, func() bool { return s.logCount(want) > before })
	if err := s.serve.Process.Signal(syscall.Signal(0)); err != nil {
		s.t.Fatalf("the daemon is gone after SIGHUP: %v", err)
	}
}

// hubStatus is the HTTP status of a GET of path with the given token.
func (s *site) hubStatus(path, token string) int {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.hubURL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// walsenderPID is the pid of the walsender serving application_name app, or "".
func walsenderPID(p *pgtest.Cluster, app string) string {
	return p.Query(fmt.Sprintf("SELECT pid FROM pg_stat_replication WHERE application_name = '%s' AND state = 'streaming'", app))
}

// TestServeReloadsConfigurationOnSIGHUP drives the real daemon: SIGHUP puts
// new tokens in force, starts a receiver for an added server and stops the
// one of a removed server, without reconnecting the server left alone; a file
// that fails to load is refused and the running configuration kept.
func TestServeReloadsConfigurationOnSIGHUP(t *testing.T) {
	s := newSite(t, pgtest.Options{})
	var mainPID string
	pgtest.WaitFor(t, 60*time.Second, "main to stream", func() bool { mainPID = walsenderPID(s.primary, "walhub_main"); return mainPID != "" })
	const path = "/v1/servers/main/backups"
	if got := s.hubStatus(path, "read-secret"); got != http.StatusOK {
		t.Fatalf("GET with the configured token: %d", got)
	}
	listen := strings.TrimPrefix(s.hubURL, "http://")
	config := func(readToken string, servers ...string) string {
		text := fmt.Sprintf("repository = %q\n[hub]\nlisten = %q\nread_tokens = [%q]\nadmin_tokens = [\"admin-secret\"]\n", s.repo, listen, readToken)
		for _, name := range servers {
			text += fmt.Sprintf("[[server]]\nname = %q\nconninfo = %q\n[server.retention]\nredundancy = 3\n", name, s.primary.ConnString(""))
		}
		return text
	}

	s.reload(config("rotated", "main", "second"), "configuration reloaded")
	if !s.logContains("servers_added=[second]") || !s.logContains("retention.redundancy") {
		t.Errorf("the reload does not log what changed")
	}
	if got := s.hubStatus(path, "read-secret"); got != http.StatusUnauthorized {
		t.Errorf("the old token after the reload: %d, want 401", got)
	}
	if got := s.hubStatus(path, "rotated"); got != http.StatusOK {
		t.Errorf("the new token after the reload: %d, want 200", got)
	}
	pgtest.WaitFor(t, 60*time.Second, "the added server to stream", func() bool { return walsenderPID(s.primary, "walhub_second") != "" })

	s.reload("repository = \n", "configuration reload refused")
	if got := s.hubStatus(path, "rotated"); got != http.StatusOK {
		t.Errorf("the token in force after a refused reload: %d, want 200", got)
	}
	if got := walsenderPID(s.primary, "walhub_second"); got == "" {
		t.Error("a refused reload stopped a receiver")
	}

	s.reload(config("rotated", "main"), "configuration reloaded")
	pgtest.WaitFor(t, 30*time.Second, "the removed server's receiver to stop", func() bool {
		return s.primary.Query("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'walhub_second'") == "0"
	})
	if got := walsenderPID(s.primary, "walhub_main"); got != mainPID {
		t.Errorf("main's walsender changed from %s to %q: its stream was dropped by the reloads", mainPID, got)
	}
}

// TestBothProgramsPrintTheirVersion runs --version of the built programs: the
// version, the commit they were built from and the Go release.
func TestBothProgramsPrintTheirVersion(t *testing.T) {
	commit, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("git rev-parse: %v", err)
	}
	for _, prog := range []string{"walhub", "walfetch"} {
		out, err := exec.Command(filepath.Join(binDir, prog), "--version").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --version: %v\n%s", prog, err, out)
		}
		line := strings.TrimSpace(string(out))
		for _, want := range []string{prog + " ", "commit " + string(commit[:12]), runtime.Version()} {
			if !strings.Contains(line, want) {
				t.Errorf("%s --version = %q, lacks %q", prog, line, want)
			}
		}
	}
}

// pgOwner is the --owner of a restore in these tests: postgres when they run
// as root, else the user running them.
func pgOwner() string {
	if os.Geteuid() == 0 {
		return "postgres"
	}
	u, _ := user.Current()
	return u.Username
}

// TestRestoreAsRootOrAsAnotherUserSaysWhatToDo: as root, restore refuses
// without --owner and gives every file to --owner with it; as postgres on the
// hub host, where the repository is the hub's, it says to restore through the
// hub (--hub-url).
func TestRestoreAsRootOrAsAnotherUserSaysWhatToDo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: restores as root and as postgres") // the suite runs as root (README)
	}
	t.Parallel()
	s := newSite(t, pgtest.Options{})
	s.walhub("backup", "--server", "main")
	scratch := pgtest.TempDir(t, "owner")
	dir := filepath.Join(scratch, "data")
	run := func(cred *syscall.Credential, config string, args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(binDir, "walhub"), append([]string{"restore", "--config", config, "--server", "main"}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run(nil, s.config, "--target-dir", dir)
	if err == nil || !strings.Contains(out, "restore run as root") || !strings.Contains(out, "--owner postgres") {
		t.Fatalf("as root without --owner: %v\n%s", err, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatal("the refused restore created the target directory")
	}
	pg, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run(nil, s.config, "--target-dir", dir, "--owner", "postgres"); err != nil {
		t.Fatalf("as root with --owner postgres: %v\n%s", err, out)
	}
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if uid := fmt.Sprint(fi.Sys().(*syscall.Stat_t).Uid); uid != pg.Uid {
			return fmt.Errorf("%s belongs to uid %s, not postgres (%s)", p, uid, pg.Uid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// As postgres on the hub host: a configuration it can read, a repository it cannot write.
	readable := filepath.Join(scratch, "walhub.toml")
	data, _ := os.ReadFile(s.config)
	os.WriteFile(readable, data, 0o644)
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	out, err = run(&syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, readable, "--target-dir", filepath.Join(scratch, "data2"))
	if err == nil || !strings.Contains(out, "user postgres cannot read and write") || !strings.Contains(out, "--hub-url "+s.hubURL) {
		t.Fatalf("as postgres on the hub host: %v\n%s", err, out)
	}
}

// TestHealthzSaysWhetherEveryReceiverStores drives the real daemon: /healthz
// is 200 while the receiver streams, 503 with the reason while its server is
// down, 200 again once it streams; /livez stays 200 throughout.
func TestHealthzSaysWhetherEveryReceiverStores(t *testing.T) {
	t.Parallel()
	s := newSite(t, pgtest.Options{}) // waits for /healthz: the receiver streams
	get := func(path string) (int, string) {
		resp, err := http.Get(s.hubURL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	s.primary.Stop("fast")
	pgtest.WaitFor(t, 60*time.Second, "/healthz to say the receiver is not storing", func() bool {
		code, body := get("/healthz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "main: receiver")
	})
	if code, _ := get("/livez"); code != http.StatusOK {
		t.Errorf("/livez while the server is down: %d", code)
	}
	s.primary.Start()
	pgtest.WaitFor(t, 90*time.Second, "/healthz to be 200 again", func() bool { code, _ := get("/healthz"); return code == http.StatusOK })
}
