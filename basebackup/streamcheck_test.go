package basebackup

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/walname"
)

// tarOf builds a tar archive of files (name → content) in name order, with a
// directory and a symbolic link among them, the way PostgreSQL sends one: no
// end-of-archive marker unless trailer is set.
func tarOf(t *testing.T, files map[string]string, trailer bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	tw.WriteHeader(&tar.Header{Name: "base", Typeflag: tar.TypeDir, Mode: 0o700})
	tw.WriteHeader(&tar.Header{Name: "pg_tblspc/16400", Typeflag: tar.TypeSymlink, Linkname: "/somewhere", Mode: 0o777})
	for _, name := range names {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(files[name]))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(files[name]))
	}
	if trailer {
		tw.Close()
	} else {
		tw.Flush()
	}
	return buf.Bytes()
}

// manifestOf is a manifest listing files with their CRC-32C.
func manifestOf(t *testing.T, files map[string]string) *Manifest {
	t.Helper()
	var entries []string
	for name, content := range files {
		h, _ := newManifestHash("CRC32C")
		h.Write([]byte(content))
		entries = append(entries, fmt.Sprintf(`{ "Path": %q, "Size": %d, "Checksum-Algorithm": "CRC32C", "Checksum": %q }`,
			name, len(content), h.Hex()))
	}
	m, err := ParseManifest(manifestFor(strings.Join(entries, ",\n")))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// streamInto writes data into c as one archive, in chunks of size chunk.
func streamInto(c *streamCheck, name string, oid uint32, data []byte, chunk int) error {
	if err := c.startArchive(name, oid); err != nil {
		return err
	}
	for len(data) > 0 {
		n := min(chunk, len(data))
		if err := c.write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func TestStreamCheckAcceptsAMatchingBackupHoweverItIsCut(t *testing.T) {
	base := map[string]string{
		"backup_label":      "START WAL LOCATION: 0/2000028\n",
		"PG_VERSION":        "15\n",
		"global/pg_control": strings.Repeat("c", 8192),
		"base/5/1259":       strings.Repeat("page", 3*2048+17), // not a multiple of 512: padding
		"base/5/empty":      "",
	}
	ts := map[string]string{"PG_15_202209061/5/16390": strings.Repeat("t", 1000)}
	all := map[string]string{}
	var bytesWant int64
	for name, content := range base {
		all[name] = content
		bytesWant += int64(len(content))
	}
	for name, content := range ts {
		all["pg_tblspc/16400/"+name] = content
		bytesWant += int64(len(content))
	}
	m := manifestOf(t, all)
	for _, trailer := range []bool{false, true} {
		for _, chunk := range []int{1, 7, 511, 512, 513, 32 << 10} {
			t.Run(fmt.Sprintf("trailer=%v/chunk=%d", trailer, chunk), func(t *testing.T) {
				c, err := newStreamCheck("CRC32C")
				if err != nil {
					t.Fatal(err)
				}
				if err := streamInto(c, "16400.tar", 16400, tarOf(t, ts, trailer), chunk); err != nil {
					t.Fatal(err)
				}
				if err := streamInto(c, "base.tar", 0, tarOf(t, base, trailer), chunk); err != nil {
					t.Fatal(err)
				}
				checked, err := c.check(m)
				if err != nil || checked.Files != len(all) || checked.Bytes != bytesWant {
					t.Fatalf("checked %+v, %v; want %d files, %d bytes, no error", checked, err, len(all), bytesWant)
				}
			})
		}
	}
}

func TestStreamCheckReportsEveryMismatch(t *testing.T) {
	manifestFiles := map[string]string{"PG_VERSION": "15\n", "base/5/1259": strings.Repeat("page", 2048),
		"base/5/2608": "catalog", "global/pg_control": "control"}
	streamed := map[string]string{
		"PG_VERSION":        "15\n",
		"base/5/1259":       strings.Repeat("page", 2047) + "PAGE", // one byte flipped in transit
		"base/5/2608":       "catalog!",                            // longer
		"base/5/extra":      "x",                                   // not in the manifest
		"global/pg_control": "control",
	}
	c, _ := newStreamCheck("CRC32C")
	if err := streamInto(c, "base.tar", 0, tarOf(t, streamed, false), 32<<10); err != nil {
		t.Fatal(err)
	}
	delete(streamed, "global/pg_control")
	manifestFiles["base/5/missing"] = "m"
	_, err := c.check(manifestOf(t, manifestFiles))
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want a VerifyError", err)
	}
	for _, want := range []string{
		"base/5/1259 has CRC32C checksum",
		"base/5/2608 has size 8, the manifest says 7",
		"base/5/extra is in the backup but not in the manifest",
		"base/5/missing is in the manifest but not in the backup",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if len(ve.Problems) != 4 {
		t.Errorf("%d problems, want 4: %q", len(ve.Problems), ve.Problems)
	}
}

func TestStreamCheckRefusesATruncatedOrMalformedArchive(t *testing.T) {
	files := map[string]string{"PG_VERSION": "15\n", "base/5/1259": strings.Repeat("page", 300)}
	whole := tarOf(t, files, false)
	// Entries: dir header (512), symlink header (512), PG_VERSION header +
	// data block (1024), base/5/1259 header (512) + 1200 bytes + 336 of padding.
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"inside a header", whole[:512+100], "unexpected EOF"},
		{"inside a file", whole[:len(whole)-400], "the archive ends inside base/5/1259, 64 of its 1200 bytes missing"},
		{"inside the padding", whole[:len(whole)-100], "unexpected EOF"},
		{"a header after a zero block", append(append(append([]byte{}, whole[:512]...), make([]byte, 512)...), whole[512:]...), "invalid tar header"},
		{"a damaged header", append(append([]byte{}, whole[:512]...), bytes.Repeat([]byte{'y'}, 512)...), "invalid tar header"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newStreamCheck("CRC32C")
			err := streamInto(c, "base.tar", 0, tc.data, 100)
			if err == nil {
				_, err = c.check(manifestOf(t, files))
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "base.tar") {
				t.Fatalf("err = %v, want one naming base.tar and saying %q", err, tc.want)
			}
		})
	}
}

func TestCheckWALRanges(t *testing.T) {
	lsn := func(s string) walname.LSN {
		l, err := walname.ParseLSN(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	b := catalog.Backup{StartLSN: lsn("0/2000028"), StartTLI: 1, StopLSN: lsn("0/2000100"), StopTLI: 1}
	cases := []struct {
		name    string
		stopTLI walname.TimeLine // 0: the same as the start
		ranges  []WALRange
		want    string // "" for no error
	}{
		{"the backup's range", 0, []WALRange{{1, "0/2000028", "0/2000100"}}, ""},
		{"across a timeline switch", 2, []WALRange{{2, "0/2000080", "0/2000100"}, {1, "0/2000028", "0/2000080"}}, ""},
		{"ends early", 0, []WALRange{{1, "0/2000028", "0/2000090"}}, "no WAL range of the manifest ends at the backup's stop 0/2000100"},
		{"starts late", 0, []WALRange{{1, "0/2000030", "0/2000100"}}, "no WAL range of the manifest starts at the backup's start 0/2000028"},
		{"other timeline", 0, []WALRange{{3, "0/2000028", "0/2000100"}}, "on timeline 1"},
		{"ends on the wrong timeline", 2, []WALRange{{1, "0/2000028", "0/2000100"}}, "ends at the backup's stop 0/2000100 on timeline 2"},
		{"none", 0, nil, "no WAL range"},
		{"garbage", 0, []WALRange{{1, "x", "0/2000100"}, {1, "0/2000028", "0/2000100"}}, "WAL range x-0/2000100"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := b
			if tc.stopTLI != 0 {
				b.StopTLI = tc.stopTLI
			}
			err := checkWALRanges(&Manifest{WAL: tc.ranges}, b)
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestCheckStoredFindsAnObjectThatChangedAfterItWasWritten(t *testing.T) {
	root := t.TempDir()
	repo := openTestRepo(t, root)
	files := map[string]string{"PG_VERSION": "15\n", "base/1/1259": strings.Repeat("page", 4096)}
	b := storeFakeBackup(t, repo, "stored", files, files)
	ctx := context.Background()
	// storeFakeBackup records no sizes or digests: write the archive again
	// the way a backup does, to know them.
	w, err := newArchiveWriter(ctx, repo, b, "base.tar.zst", Compression{Method: "zstd", Level: 1})
	if err != nil {
		t.Fatal(err)
	}
	data := tarOf(t, files, false)
	w.Write(data)
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b.Files = []catalog.BackupFile{{Name: "base.tar.zst", Compression: "zstd", Size: w.original, StoredSize: w.stored,
		SHA256Stored: w.SHA256()}}
	if err := checkStored(ctx, RepoOpener(repo, b), b); err != nil {
		t.Fatalf("intact backup: %v", err)
	}

	path := filepath.Join(root, filepath.FromSlash(b.StoredPath), "base.tar.zst")
	stored, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	damaged := append([]byte{}, stored...)
	damaged[len(damaged)/2] ^= 0x40
	cases := []struct {
		name   string
		object []byte
		want   string
	}{
		{"a flipped bit", damaged, "stored base.tar.zst"},
		{"truncated", stored[:len(stored)-10], "stored base.tar.zst"},
		{"a byte more", append(append([]byte{}, stored...), 0), "stored base.tar.zst"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, tc.object, 0o600); err != nil {
				t.Fatal(err)
			}
			err := checkStored(ctx, RepoOpener(repo, b), b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
}
