// Package pgtest creates real PostgreSQL 15 clusters for tests: initdb (data
// checksums on) in a temporary directory on a free port, run as the postgres
// user when the test runs as root. Primaries allow replication; standbys are
// made from a base backup. Every cluster is stopped and removed when its test
// ends, failed or not. Missing binaries fail the test with a message that says
// how to install them; nothing is skipped silently.
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/walhub/walhub/walname"
)

// BinDir is where the PostgreSQL 15 server binaries are; PGTEST_BINDIR overrides it.
var BinDir = envOr("PGTEST_BINDIR", "/usr/lib/postgresql/15/bin")

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Bin returns the path of a PostgreSQL binary, failing the test when it is missing.
func Bin(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(BinDir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("PostgreSQL 15 binary %s not found (%v): install it with `apt-get install -y postgresql-15` "+
			"(or set PGTEST_BINDIR to the directory holding initdb, postgres, pg_ctl, pgbench, pg_waldump)", p, err)
	}
	return p
}

var (
	pgUserOnce sync.Once
	pgUID      = -1
	pgGID      = -1
	pgUserErr  error
)

// asRoot reports whether server binaries must be started through runuser, and
// finds the postgres user's ids for chown.
func asRoot(t testing.TB) bool {
	t.Helper()
	if os.Geteuid() != 0 {
		return false
	}
	pgUserOnce.Do(func() {
		u, err := user.Lookup("postgres")
		if err != nil {
			pgUserErr = fmt.Errorf("running as root needs a postgres user to start PostgreSQL: %w "+
				"(apt-get install -y postgresql-15 creates it)", err)
			return
		}
		pgUID, _ = strconv.Atoi(u.Uid)
		pgGID, _ = strconv.Atoi(u.Gid)
	})
	if pgUserErr != nil {
		t.Fatal(pgUserErr)
	}
	return true
}

// Chown gives path (recursively) to the postgres user when running as root,
// so a server started as postgres can use it.
func Chown(t testing.TB, path string) {
	t.Helper()
	if !asRoot(t) {
		return
	}
	err := filepath.Walk(path, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, pgUID, pgGID)
	})
	if err != nil {
		t.Fatalf("chown %s: %v", path, err)
	}
}

// ServerCommand builds a command for a server-side binary, run as postgres when
// the test runs as root.
func ServerCommand(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	bin := Bin(t, name)
	if asRoot(t) {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", bin}, args...)...)
	}
	return exec.Command(bin, args...)
}

// Run runs a command and fails the test with its output when it fails.
func Run(t testing.TB, cmd *exec.Cmd) string {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return string(out)
}

// TempDir makes a directory that the postgres user can use and that is removed
// when the test ends. (t.TempDir's parent is private to root.)
func TempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "walhub-"+prefix+"-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	Chown(t, dir)
	t.Cleanup(func() {
		if os.Getenv("PGTEST_KEEP") != "" && t.Failed() {
			t.Logf("keeping %s (PGTEST_KEEP)", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

var portMu sync.Mutex
var usedPorts = map[int]bool{}

// FreePort returns a loopback TCP port nobody listens on.
func FreePort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !usedPorts[port] {
			usedPorts[port] = true
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// Cluster is one PostgreSQL cluster made for a test.
type Cluster struct {
	t testing.TB
	// Name labels the cluster in logs.
	Name string
	// Dir holds data/, the log and the socket directory.
	Dir     string
	DataDir string
	Port    int
	// SocketDir is the unix socket directory.
	SocketDir string
	LogFile   string
	// CPUs, when set, is the CPU list (taskset -c syntax: "0", "0,1") that
	// Start runs the server on: the postmaster and every process it starts
	// (backends, the startup process, restore_command) inherit it.
	CPUs    string
	running bool
}

// Options tune a new primary.
type Options struct {
	// SegmentSizeMB sets initdb --wal-segsize (default 16).
	SegmentSizeMB int
	// Conf lines are appended to postgresql.conf.
	Conf []string
}

// NewPrimary initdb's and starts a primary with replication enabled. It is
// stopped and removed when the test ends.
func NewPrimary(t testing.TB, name string, opts Options) *Cluster {
	t.Helper()
	c := newCluster(t, name)
	args := []string{"-D", c.DataDir, "-U", "postgres", "--auth=trust", "--data-checksums", "-E", "UTF8",
		"--locale=C", "--no-sync"}
	if opts.SegmentSizeMB != 0 {
		args = append(args, "--wal-segsize", strconv.Itoa(opts.SegmentSizeMB))
	}
	Run(t, ServerCommand(t, "initdb", args...))
	c.writeConf(append([]string{
		"wal_level = replica",
		"max_wal_senders = 10",
		"max_replication_slots = 10",
		"hot_standby = on",
		"wal_keep_size = 0",
		"shared_buffers = 32MB",
		"max_connections = 40",
		"fsync = on",
		"synchronous_commit = on",
		"log_line_prefix = '%m [%p] %q%a '",
		"log_min_messages = info",
		"wal_sender_timeout = 60s",
		"checkpoint_timeout = 30min",
		"max_wal_size = 1GB",
		"wal_retrieve_retry_interval = 1s",
	}, opts.Conf...))
	c.writeHBA()
	c.Start()
	return c
}

func newCluster(t testing.TB, name string) *Cluster {
	t.Helper()
	Bin(t, "postgres")
	dir := TempDir(t, "pg-"+name)
	c := &Cluster{t: t, Name: name, Dir: dir, DataDir: filepath.Join(dir, "data"), Port: FreePort(t),
		SocketDir: filepath.Join(dir, "sock"), LogFile: filepath.Join(dir, "postgres.log")}
	if err := os.Mkdir(c.SocketDir, 0o755); err != nil {
		t.Fatal(err)
	}
	Chown(t, c.SocketDir)
	t.Cleanup(func() {
		if c.running {
			c.Stop("immediate")
		}
		if t.Failed() {
			c.dumpLog()
		}
	})
	return c
}

func (c *Cluster) dumpLog() {
	data, err := os.ReadFile(c.LogFile)
	if err != nil {
		return
	}
	if len(data) > 6000 {
		data = data[len(data)-6000:]
	}
	c.t.Logf("--- last lines of %s's log:\n%s", c.Name, data)
}

func (c *Cluster) writeConf(lines []string) {
	c.t.Helper()
	lines = append([]string{
		fmt.Sprintf("port = %d", c.Port),
		"listen_addresses = '127.0.0.1'",
		fmt.Sprintf("unix_socket_directories = '%s'", c.SocketDir),
	}, lines...)
	c.AppendConf(lines...)
}

// AppendConf appends lines to postgresql.conf (takes effect on reload or restart).
func (c *Cluster) AppendConf(lines ...string) {
	c.t.Helper()
	f, err := os.OpenFile(filepath.Join(c.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("\n" + strings.Join(lines, "\n") + "\n"); err != nil {
		c.t.Fatal(err)
	}
}

func (c *Cluster) writeHBA() {
	c.t.Helper()
	hba := "local all all trust\nlocal replication all trust\n" +
		"host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"
	if err := os.WriteFile(filepath.Join(c.DataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		c.t.Fatal(err)
	}
	Chown(c.t, filepath.Join(c.DataDir, "pg_hba.conf"))
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() {
	c.t.Helper()
	cmd := ServerCommand(c.t, "pg_ctl", "-D", c.DataDir, "-l", c.LogFile, "-w", "-t", "120", "start")
	if c.CPUs != "" {
		cmd = exec.Command("taskset", append([]string{"-c", c.CPUs}, cmd.Args...)...)
	}
	Run(c.t, cmd)
	c.running = true
}

// Stop stops the server: mode is "smart", "fast" or "immediate".
func (c *Cluster) Stop(mode string) {
	c.t.Helper()
	out, err := ServerCommand(c.t, "pg_ctl", "-D", c.DataDir, "-m", mode, "-w", "-t", "120", "stop").CombinedOutput()
	if err != nil {
		c.t.Errorf("stop %s (%s): %v\n%s", c.Name, mode, err, out)
	}
	c.running = false
}

// Restart stops with mode and starts again.
func (c *Cluster) Restart(mode string) {
	c.t.Helper()
	c.Stop(mode)
	c.Start()
}

// Kill9 kills the postmaster with SIGKILL, as a crash would, then waits for its
// children to notice and exit so the directory can be started again.
func (c *Cluster) Kill9() {
	c.t.Helper()
	pid := c.postmasterPID()
	children := childrenOf(pid)
	syscall.Kill(pid, syscall.SIGKILL)
	deadline := time.Now().Add(30 * time.Second)
	for _, child := range children {
		for syscall.Kill(child, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		syscall.Kill(child, syscall.SIGKILL)
	}
	c.running = false
}

// postmasterPID reads the running server's pid from postmaster.pid.
func (c *Cluster) postmasterPID() int {
	c.t.Helper()
	data, err := os.ReadFile(filepath.Join(c.DataDir, "postmaster.pid"))
	if err != nil {
		c.t.Fatalf("%s: %v", c.Name, err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(data), "\n", 2)[0])
	if err != nil {
		c.t.Fatalf("%s: bad postmaster.pid", c.Name)
	}
	return pid
}

// AllowedCPUs is the list of CPUs the running server's postmaster may run on
// (Cpus_allowed_list in /proc, e.g. "0" or "0-1").
func (c *Cluster) AllowedCPUs() string {
	c.t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.postmasterPID()))
	if err != nil {
		c.t.Fatalf("%s: %v", c.Name, err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	c.t.Fatalf("%s: no Cpus_allowed_list in /proc/%d/status", c.Name, c.postmasterPID())
	return ""
}

// Pin runs this process (every thread) and its children (servers it started,
// such as versitygw) on cpus (taskset -c syntax) from now on; what they
// start later inherits it. A cluster's CPUs field places a cluster apart.
func Pin(t testing.TB, cpus string) {
	t.Helper()
	for _, pid := range append([]int{os.Getpid()}, childrenOf(os.Getpid())...) {
		Run(t, exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(pid)))
	}
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	return Processes(func(proc string) bool {
		stat, err := os.ReadFile(filepath.Join(proc, "stat"))
		if err != nil {
			return false
		}
		// The fields after the command (in parentheses) start with state, then ppid.
		i := strings.LastIndexByte(string(stat), ')')
		fields := strings.Fields(string(stat[i+1:]))
		return len(fields) > 1 && fields[1] == strconv.Itoa(pid)
	})
}

// Processes lists the running processes for which match, given the
// process's directory in /proc ("/proc/1234"), reports true.
func Processes(match func(proc string) bool) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && match(filepath.Join("/proc", e.Name())) {
			out = append(out, pid)
		}
	}
	return out
}

// Promote promotes a standby and waits until it accepts writes.
func (c *Cluster) Promote() {
	c.t.Helper()
	Run(c.t, ServerCommand(c.t, "pg_ctl", "-D", c.DataDir, "-w", "-t", "120", "promote"))
	c.WaitFor(60*time.Second, "promotion", func() bool { return c.Query("SELECT pg_is_in_recovery()") == "f" })
}

// ConnString is a libpq connection string for database db (default postgres).
func (c *Cluster) ConnString(db string) string {
	if db == "" {
		db = "postgres"
	}
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", c.Port, db)
}

// Connect opens a pgx connection, closed when the test ends.
func (c *Cluster) Connect(db string) *pgx.Conn {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.ConnString(db))
	if err != nil {
		c.t.Fatalf("connect to %s: %v", c.Name, err)
	}
	c.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Query runs one SQL statement through psql in database postgres and returns
// its unaligned, tuples-only output, trimmed.
func (c *Cluster) Query(sql string) string {
	c.t.Helper()
	return c.QueryDB("postgres", sql)
}

// QueryDB is Query in database db.
func (c *Cluster) QueryDB(db, sql string) string {
	c.t.Helper()
	cmd := exec.Command(Bin(c.t, "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
		"-p", strconv.Itoa(c.Port), "-U", "postgres", "-d", db, "-c", sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("psql on %s: %s: %v\n%s", c.Name, sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TryQuery is Query that returns the error instead of failing the test.
func (c *Cluster) TryQuery(sql string) (string, error) {
	cmd := exec.Command(Bin(c.t, "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
		"-p", strconv.Itoa(c.Port), "-U", "postgres", "-d", "postgres", "-c", sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// PgbenchInit runs pgbench -i at the given scale in database postgres.
func (c *Cluster) PgbenchInit(scale int) {
	c.t.Helper()
	Run(c.t, exec.Command(Bin(c.t, "pgbench"), "-i", "-q", "-s", strconv.Itoa(scale), "-h", "127.0.0.1",
		"-p", strconv.Itoa(c.Port), "-U", "postgres", "postgres"))
}

// Pgbench runs pgbench with clients for the given number of transactions per client.
func (c *Cluster) Pgbench(clients, transactions int) {
	c.t.Helper()
	Run(c.t, exec.Command(Bin(c.t, "pgbench"), "-n", "-c", strconv.Itoa(clients), "-t", strconv.Itoa(transactions),
		"-h", "127.0.0.1", "-p", strconv.Itoa(c.Port), "-U", "postgres", "postgres"))
}

// PgbenchFor runs pgbench with clients for a duration, returning when it ends.
func (c *Cluster) PgbenchFor(clients int, d time.Duration) {
	c.t.Helper()
	Run(c.t, exec.Command(Bin(c.t, "pgbench"), "-n", "-c", strconv.Itoa(clients), "-T", strconv.Itoa(int(d.Seconds())),
		"-h", "127.0.0.1", "-p", strconv.Itoa(c.Port), "-U", "postgres", "postgres"))
}

// StartPgbench starts pgbench in the background for at most d; the returned
// function waits for it to end (and is also called when the test ends).
func (c *Cluster) StartPgbench(clients int, d time.Duration) (wait func()) {
	c.t.Helper()
	cmd := exec.Command(Bin(c.t, "pgbench"), "-n", "-c", strconv.Itoa(clients), "-T", strconv.Itoa(int(d.Seconds())),
		"-h", "127.0.0.1", "-p", strconv.Itoa(c.Port), "-U", "postgres", "postgres")
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	var once sync.Once
	wait = func() { once.Do(func() { cmd.Wait() }) }
	c.t.Cleanup(func() { cmd.Process.Kill(); wait() })
	return wait
}

// GenerateWAL writes about mb megabytes of WAL with a throwaway table.
func (c *Cluster) GenerateWAL(mb int) {
	c.t.Helper()
	c.Query(fmt.Sprintf(`CREATE TABLE IF NOT EXISTS walfill (x bigint, pad text);
		INSERT INTO walfill SELECT g, repeat('x', 900) FROM generate_series(1, %d) g;`, mb*1000))
}

// CurrentLSN returns pg_current_wal_lsn() (primary) or the last replayed LSN (standby).
func (c *Cluster) CurrentLSN() walname.LSN {
	c.t.Helper()
	s := c.Query("SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END")
	lsn, err := walname.ParseLSN(s)
	if err != nil {
		c.t.Fatal(err)
	}
	return lsn
}

// TimeLine returns the timeline a primary writes on.
func (c *Cluster) TimeLine() walname.TimeLine {
	c.t.Helper()
	n, err := strconv.ParseUint(c.Query("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16, 32)
	if err != nil {
		c.t.Fatal(err)
	}
	return walname.TimeLine(n)
}

// SwitchWAL forces a segment switch and returns the end of the segment it
// completed (the segment boundary after the switch): every segment before
// the LSN returned is complete, so a test can wait for all of them to be
// stored. It is computed from what pg_switch_wal() returns, not read
// afterwards with pg_current_wal_lsn(): WAL written after the switch (the
// bgwriter's running-xacts record, a checkpoint, another session) would put
// that in the next segment, which nothing completes on an idle server.
func (c *Cluster) SwitchWAL() walname.LSN {
	c.t.Helper()
	out := c.Query("SELECT pg_switch_wal() || ' ' || setting FROM pg_settings WHERE name = 'wal_segment_size'")
	lsnText, sizeText, _ := strings.Cut(out, " ")
	lsn, err := walname.ParseLSN(lsnText)
	if err != nil {
		c.t.Fatalf("pg_switch_wal on %s: %q: %v", c.Name, out, err)
	}
	segSize, err := strconv.ParseUint(sizeText, 10, 64)
	if err != nil || segSize == 0 {
		c.t.Fatalf("wal_segment_size of %s: %q: %v", c.Name, out, err)
	}
	// pg_switch_wal returns the end of its switch record, inside the segment
	// it completed, or, when there was nothing to switch, the start of the
	// segment in use.
	if off := walname.SegmentOffset(lsn, segSize); off != 0 {
		lsn += walname.LSN(segSize - off)
	}
	return lsn
}

// CreateSlot creates a physical replication slot reserving WAL now.
func (c *Cluster) CreateSlot(name string) {
	c.t.Helper()
	c.Query(fmt.Sprintf("SELECT pg_create_physical_replication_slot('%s', true)", name))
}

// SlotRestartLSN returns a slot's restart_lsn (0 when NULL).
func (c *Cluster) SlotRestartLSN(name string) walname.LSN {
	c.t.Helper()
	s := c.Query(fmt.Sprintf("SELECT COALESCE(restart_lsn, '0/0') FROM pg_replication_slots WHERE slot_name = '%s'", name))
	lsn, err := walname.ParseLSN(s)
	if err != nil {
		c.t.Fatalf("slot %s: %v", name, err)
	}
	return lsn
}

// WaitFor polls cond every 100 ms until it holds, failing the test after timeout.
func (c *Cluster) WaitFor(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	WaitFor(c.t, timeout, what, cond)
}

// WaitFor polls cond every 100 ms until it holds, failing the test after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	waitEvery(t, 100*time.Millisecond, timeout, what, cond)
}

// waitEvery polls cond every interval until it holds, failing the test after
// timeout.
func waitEvery(t testing.TB, interval, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(interval)
	}
}

// WaitReplay waits until the standby has replayed up to lsn. It asks every
// 100 ms over one connection, opened again only when it fails (before the
// standby accepts connections, or after a restart): a psql and a new backend
// for each look cost the machine more CPU than some replays being measured
// (bench/), on the cores recovery needs.
func (c *Cluster) WaitReplay(lsn walname.LSN, timeout time.Duration) {
	c.t.Helper()
	c.WaitReplayEvery(lsn, 100*time.Millisecond, timeout)
}

// WaitReplayEvery is WaitReplay asking every interval: a benchmark that times
// a replay of under a second can't read its end to 100 ms.
func (c *Cluster) WaitReplayEvery(lsn walname.LSN, interval, timeout time.Duration) {
	c.t.Helper()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	waitEvery(c.t, interval, timeout, fmt.Sprintf("%s to replay %s", c.Name, lsn), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if conn == nil {
			var err error
			if conn, err = pgx.Connect(ctx, c.ConnString("")); err != nil {
				conn = nil
				return false
			}
		}
		var s *string
		if err := conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text").Scan(&s); err != nil {
			conn.Close(context.Background())
			conn = nil
			return false
		}
		if s == nil {
			return false
		}
		got, err := walname.ParseLSN(*s)
		return err == nil && got >= lsn
	})
}

// StandbyOptions tune a new standby.
type StandbyOptions struct {
	// Slot is the primary's slot the standby streams through ("" for none).
	Slot string
	// NoStream leaves primary_conninfo out (an archive-only standby).
	NoStream bool
	// Conf lines are appended to postgresql.conf before the start.
	Conf []string
	// NoStart leaves the standby stopped.
	NoStart bool
}

// NewStandby makes a standby of c with pg_basebackup (-R) and starts it.
func (c *Cluster) NewStandby(name string, opts StandbyOptions) *Cluster {
	c.t.Helper()
	s := newCluster(c.t, name)
	args := []string{"-D", s.DataDir, "-h", "127.0.0.1", "-p", strconv.Itoa(c.Port), "-U", "postgres",
		"-X", "stream", "-c", "fast", "--no-sync"}
	if !opts.NoStream {
		args = append(args, "-R")
	}
	if opts.Slot != "" {
		args = append(args, "-S", opts.Slot)
	}
	Run(c.t, ServerCommand(c.t, "pg_basebackup", args...))
	if opts.NoStream {
		if err := os.WriteFile(filepath.Join(s.DataDir, "standby.signal"), nil, 0o600); err != nil {
			c.t.Fatal(err)
		}
		Chown(c.t, filepath.Join(s.DataDir, "standby.signal"))
	}
	s.writeConf(opts.Conf)
	s.AppendConf(fmt.Sprintf("cluster_name = '%s'", name))
	if !opts.NoStart {
		s.Start()
	}
	return s
}

// AdoptDataDir makes a cluster of an existing data directory (a restore): it
// takes ownership, points port and socket at a fresh port, and removes it
// when the test ends. It does not start it.
func AdoptDataDir(t testing.TB, name, dataDir string) *Cluster {
	t.Helper()
	c := newCluster(t, name)
	c.DataDir = dataDir
	os.Chmod(dataDir, 0o700)
	Chown(t, dataDir)
	c.writeConf(nil)
	c.writeHBA()
	return c
}

// BuildCommand builds walhub's program cmd/<name> into dir and returns its
// path. It builds it as it ships: walfetch without cgo (a static binary that
// starts fast), with walfetch-net beside it (the part that talks to the hub,
// which walfetch executes) and walfetch-take (the restore_command's spool
// hit, in C). dir should be readable by the postgres user when
// PostgreSQL runs the program (walfetch as restore_command): use TempDir.
func BuildCommand(dir, name string) (string, error) {
	if name == "walfetch" {
		for _, n := range []string{"walfetch-net", "walfetch-take"} {
			if _, err := BuildCommand(dir, n); err != nil {
				return "", err
			}
		}
	}
	if name == "walfetch-take" {
		return buildTake(dir)
	}
	bin := filepath.Join(dir, name)
	// The commit goes in as `make build` puts it, for --version.
	var ldflags string
	if commit, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		ldflags = "-X github.com/walhub/walhub/version.Commit=" + strings.TrimSpace(string(commit))
	}
	build := exec.Command("go", "build", "-ldflags", ldflags, "-o", bin, "github.com/walhub/walhub/cmd/"+name)
	if name == "walfetch" || name == "walfetch-net" {
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v\n%s", name, err, out)
	}
	return bin, nil
}

// buildTake compiles cmd/walfetch-take into dir with make, as make build
// does (the flags are the Makefile's).
func buildTake(dir string) (string, error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" {
		return "", fmt.Errorf("build walfetch-take: find the module's root: %v", err)
	}
	bin := filepath.Join(dir, "walfetch-take")
	make := exec.Command("make", "--no-print-directory", "-C", filepath.Dir(strings.TrimSpace(string(gomod))), "walfetch-take", "BIN="+dir)
	if out, err := make.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build walfetch-take: %v\n%s", err, out)
	}
	return bin, nil
}
