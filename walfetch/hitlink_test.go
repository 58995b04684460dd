package walfetch

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/test/pgtest"
)

// hitDataDir is a data directory with a postmaster.pid (pid 4242, started at
// 1764800000) and a spool holding segment seg: its Spool and the data
// directory.
func hitDataDir(t *testing.T, seg string) (*Spool, string) {
	t.Helper()
	data := t.TempDir()
	root := filepath.Join(data, "pg_wal", "walfetch-spool")
	sp := &Spool{Dir: filepath.Join(root, "0123456789abcdef"), Root: root}
	if err := os.MkdirAll(sp.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	pid := "4242\n" + data + "\n1764800000\n5432\n/run/postgresql\n*\n  1234567     65536\nready   \n"
	if err := os.WriteFile(filepath.Join(data, "postmaster.pid"), []byte(pid), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sp.Path(seg), []byte("verified segment"), 0o600); err != nil {
		t.Fatal(err)
	}
	return sp, data
}

// hubSettings are the settings the spools of these tests are of.
var hubSettings = Settings{URL: "http://hub", Server: "main", Spool: "pg_wal/walfetch-spool"}

func TestHitLinkNameIsBootIDAndPostmaster(t *testing.T) {
	boot, err := os.ReadFile(bootIDPath)
	if err != nil {
		t.Skipf("no boot id: %v", err)
	}
	tag := HubTag(hubSettings)
	for _, tt := range []struct {
		how, pidFile, want string // want "": an error
	}{
		{"a running postmaster", "4242\n/data\n1764800000\n5432\n", strings.TrimSpace(string(boot)) + ".1764800000.4242." + tag},
		{"no postmaster.pid", "", ""},
		{"cut short", "4242\n/data\n", ""},
		{"no pid", "x\n/data\n1764800000\n5432\n", ""},
		{"no start time", "4242\n/data\n\n5432\n", ""},
	} {
		t.Run(tt.how, func(t *testing.T) {
			dir := t.TempDir()
			if tt.pidFile != "" {
				if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(tt.pidFile), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := HitLinkName(dir, hubSettings)
			if got != tt.want || (err == nil) != (tt.want != "") {
				t.Errorf("HitLinkName = %q, %v; want %q", got, err, tt.want)
			}
			if err == nil && !IsHitLink(got) {
				t.Errorf("IsHitLink(%q) = false", got)
			}
		})
	}
}

func TestShellRestoreCommandWantsTheSpoolInPgWal(t *testing.T) {
	for _, tt := range []struct {
		spool string
		ok    bool
	}{
		{"pg_wal/walfetch-spool", true},
		{"pg_wal/spools/mine/", true},
		{"/var/spool/walfetch", false},
		{"pg_wal/../spool", false},
		{"spool", false},
		{"pg_wal", false},
	} {
		_, err := ShellRestoreCommand(Settings{URL: "http://hub", Server: "main", Spool: tt.spool}, "walfetch", "")
		if (err == nil) != tt.ok {
			t.Errorf("ShellRestoreCommand(%q): %v, want ok %v", tt.spool, err, tt.ok)
		}
	}
}

// TestShellTakesOnlyWhatItsPostmastersLinkHolds runs the restore_command
// ShellRestoreCommand makes, in both its forms (with walfetch-take, and with
// mv), with /bin/sh as PostgreSQL does, in a data directory: a segment the
// spool holds, through the link made for the running postmaster, is renamed
// into %p with no walfetch started; anything else goes to walfetch (here a
// script that records its call and exits 1), whose exit status is the
// command's. A link made for another postmaster (one that ran before a
// crash, or another cluster's), or by the prefetcher of another hub (the
// restore_command changed since), is never followed.
func TestShellTakesOnlyWhatItsPostmastersLinkHolds(t *testing.T) {
	if _, err := os.ReadFile(bootIDPath); err != nil {
		t.Skipf("no boot id: %v", err)
	}
	const seg = "000000010000000000000007"
	take, err := pgtest.BuildCommand(t.TempDir(), TakeProgram)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		how      string
		file     string // %f
		prepare  func(t *testing.T, sp *Spool, data string)
		wantTake bool
	}{
		{"a hit", seg, func(t *testing.T, sp *Spool, data string) { publish(t, sp, data, hubSettings) }, true},
		{"not prefetched", "000000010000000000000008", func(t *testing.T, sp *Spool, data string) { publish(t, sp, data, hubSettings) }, false},
		{"a history file", "00000002.history", func(t *testing.T, sp *Spool, data string) { publish(t, sp, data, hubSettings) }, false},
		{"the link of another hub's prefetcher", seg, func(t *testing.T, sp *Spool, data string) {
			publish(t, sp, data, Settings{URL: "http://old-hub", Server: "main"})
		}, false},
		{"no link", seg, func(*testing.T, *Spool, string) {}, false},
		{"a link of the postmaster before", seg, func(t *testing.T, sp *Spool, data string) {
			name, err := HitLinkName(data, hubSettings)
			if err != nil {
				t.Fatal(err)
			}
			old := strings.Replace(name, ".1764800000.", ".1764700000.", 1)
			if err := os.Symlink(filepath.Base(sp.Dir), filepath.Join(sp.Root, old)); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"no postmaster.pid", seg, func(t *testing.T, sp *Spool, data string) {
			publish(t, sp, data, hubSettings)
			os.Remove(filepath.Join(data, "postmaster.pid"))
		}, false},
	}
	for _, form := range []struct{ name, take string }{{TakeProgram, take}, {"mv", ""}} {
		for _, tt := range cases {
			t.Run(form.name+"/"+tt.how, func(t *testing.T) {
				t.Parallel()
				sp, data := hitDataDir(t, seg)
				tt.prepare(t, sp, data)
				calls := filepath.Join(data, "walfetch-calls")
				fake := filepath.Join(t.TempDir(), "walfetch")
				if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"$*\" >>"+calls+"\nexit 1\n"), 0o755); err != nil {
					t.Fatal(err)
				}
				line, err := ShellRestoreCommand(hubSettings, ShellQuote(fake)+" --url http://hub", form.take)
				if err != nil {
					t.Fatal(err)
				}
				line = strings.NewReplacer("%f", tt.file, "%p", "pg_wal/RECOVERYXLOG").Replace(line)
				cmd := exec.Command("/bin/sh", "-c", line)
				cmd.Dir = data
				out, err := cmd.CombinedOutput()
				called, _ := os.ReadFile(calls)
				got, readErr := os.ReadFile(filepath.Join(data, "pg_wal", "RECOVERYXLOG"))
				_, spoolErr := os.Stat(sp.Path(seg))
				if tt.wantTake {
					if err != nil || readErr != nil || string(got) != "verified segment" || len(called) != 0 || spoolErr == nil {
						t.Errorf("exit %v (%s), %%p %q (%v), walfetch called %q, still in the spool %v: want the segment taken by the shell",
							err, out, got, readErr, called, spoolErr == nil)
					}
					return
				}
				if want := "--url http://hub " + tt.file + " pg_wal/RECOVERYXLOG\n"; string(called) != want {
					t.Errorf("walfetch called with %q, want %q", called, want)
				}
				if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
					t.Errorf("exit %v (%s), want walfetch's 1", err, out)
				}
				if readErr == nil || spoolErr != nil {
					t.Errorf("%%p written (%q) or the spool's segment gone (%v): want neither", got, spoolErr)
				}
			})
		}
	}
}

// TestTakeExitStatus runs walfetch-take alone: its exit status is 0 for a
// rename, else that of the walfetch it executes (given the same arguments,
// with the stop signals it ignored around the rename no longer ignored, and
// its fallback taken for any failed rename, not only a missing file), and
// above 125 (FATAL for PostgreSQL, never "not available") when it cannot
// execute walfetch or is called wrongly.
func TestTakeExitStatus(t *testing.T) {
	take, err := pgtest.BuildCommand(t.TempDir(), TakeProgram)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The fallback prints its arguments and which of SIGHUP, SIGINT, SIGQUIT
	// and SIGTERM it was started with ignored (bits 0-2 and 14 of SigIgn).
	fallback := filepath.Join(dir, "walfetch")
	script := "#!/bin/sh\necho \"$*\"\nsed -n 's/^SigIgn:[[:space:]]*//p' /proc/$$/status\nexit 7\n"
	if err := os.WriteFile(fallback, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		how      string
		args     []string
		spool    bool // a segment in the spool to take
		wantExit int
		wantOut  string // a prefix of the output
	}{
		{"a hit", []string{"spool", "p", fallback, "--x", "f", "p"}, true, 0, ""},
		{"a miss", []string{"nothing", "p", fallback, "--x", "f", "p"}, false, 7, "--x f p\n"},
		{"a rename that fails otherwise", []string{"spool", "adir", fallback, "f", "adir"}, true, 7, "f adir\n"},
		{"no walfetch", []string{"nothing", "p", filepath.Join(dir, "gone"), "f", "p"}, false, 127, "walfetch-take: cannot execute"},
		{"too few arguments", []string{"spool", "p"}, true, 255, "walfetch-take renames"},
	} {
		t.Run(tt.how, func(t *testing.T) {
			os.Remove(filepath.Join(dir, "p"))
			os.Remove(filepath.Join(dir, "spool"))
			if tt.spool {
				if err := os.WriteFile(filepath.Join(dir, "spool"), []byte("verified segment"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command(take, tt.args...)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantExit || !strings.HasPrefix(string(out), tt.wantOut) {
				t.Fatalf("exit %d, output %q; want %d, %q...", code, out, tt.wantExit, tt.wantOut)
			}
			got, _ := os.ReadFile(filepath.Join(dir, "p"))
			if (string(got) == "verified segment") != (tt.wantExit == 0) {
				t.Errorf("%%p holds %q", got)
			}
			if tt.wantExit == 7 {
				lines := strings.Split(string(out), "\n")
				mask, err := strconv.ParseUint(lines[1], 16, 64)
				if err != nil || mask&(1<<0|1<<1|1<<2|1<<14) != 0 {
					t.Errorf("walfetch started with SigIgn %q (%v): want SIGHUP, SIGINT, SIGQUIT and SIGTERM not ignored", lines[1], err)
				}
			}
		})
	}
}

func publish(t *testing.T, sp *Spool, data string, s Settings) {
	t.Helper()
	if _, err := sp.PublishHitLink(data, s); err != nil {
		t.Fatal(err)
	}
}

// TestStaleHitLinksAreRemoved: a prefetcher removes the links whose spool is
// gone and those to its own spool made for another postmaster, under their
// names or the temporary ones a prefetcher that died while making them left;
// the one it keeps and those to another live spool stay.
func TestStaleHitLinksAreRemoved(t *testing.T) {
	if _, err := os.ReadFile(bootIDPath); err != nil {
		t.Skipf("no boot id: %v", err)
	}
	sp, data := hitDataDir(t, "000000010000000000000007")
	keep, err := sp.PublishHitLink(data, hubSettings)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(sp.Root, "fedcba9876543210")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	const boot, tag = "01234567-89ab-cdef-0123-456789abcdef", ".0123456789abcdef"
	links := map[string]string{ // name -> target
		boot + ".1.100" + tag:                filepath.Base(sp.Dir), // this spool, another postmaster: removed
		boot + ".2.200" + tag:                "aaaaaaaaaaaaaaaa",    // a spool gone: removed
		boot + ".3.300" + tag:                filepath.Base(other),  // another live spool: stays
		"." + boot + ".4.400" + tag + ".tmp": filepath.Base(sp.Dir), // left half made, to this spool: removed
		"." + boot + ".5.500" + tag + ".tmp": filepath.Base(other),  // being made for another live spool: stays
		"notalink":                           filepath.Base(sp.Dir), // not of this form: stays
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(sp.Root, name)); err != nil {
			t.Fatal(err)
		}
	}
	sp.RemoveStaleHitLinks(keep)
	var left []string
	entries, _ := os.ReadDir(sp.Root)
	for _, e := range entries {
		if e.Type()&os.ModeSymlink != 0 {
			left = append(left, e.Name())
		}
	}
	want := []string{"." + boot + ".5.500" + tag + ".tmp", filepath.Base(keep), boot + ".3.300" + tag, "notalink"}
	slices.Sort(want)
	if !slices.Equal(left, want) {
		t.Errorf("links left: %v, want %v", left, want)
	}
	// Withdrawn only while it leads to this spool.
	sp.WithdrawHitLink(keep)
	if _, err := os.Lstat(keep); err == nil {
		t.Errorf("%s not withdrawn", keep)
	}
}

// TestWatchTakenSeesRenamesOutOfTheSpool: a file renamed out of the spool's
// directory is reported by name; the prefetcher's own renames (a .part into
// place) and removals are not.
func TestWatchTakenSeesRenamesOutOfTheSpool(t *testing.T) {
	sp, data := hitDataDir(t, "000000010000000000000007")
	taken := make(chan string, 16)
	stop, err := sp.WatchTaken(taken)
	if err != nil {
		t.Skipf("no inotify: %v", err)
	}
	defer stop()
	part := sp.Path("000000010000000000000008" + PartSuffix)
	if err := os.WriteFile(part, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		os.Rename(part, sp.Path("000000010000000000000008")),
		os.Remove(sp.Path("000000010000000000000008")),
		os.Rename(sp.Path("000000010000000000000007"), filepath.Join(data, "pg_wal", "RECOVERYXLOG")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	select {
	case n := <-taken:
		if n != "000000010000000000000007" {
			t.Errorf("reported %q first, want 000000010000000000000007", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the rename out of the spool was not reported")
	}
	select {
	case n := <-taken:
		t.Errorf("also reported %q", n)
	case <-time.After(50 * time.Millisecond):
	}
}
