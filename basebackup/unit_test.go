package basebackup

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/klauspost/compress/zstd"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/repository"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/walname"
)

// manifestFor builds a manifest the way PostgreSQL writes it, with its own checksum.
func manifestFor(files string) []byte {
	body := "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n" + files + "\n],\n" +
		"\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n"
	sum := sha256.Sum256([]byte(body))
	return []byte(body + "\"Manifest-Checksum\": \"" + hex.EncodeToString(sum[:]) + "\"}\n")
}

func TestManifestChecksumDetectsTampering(t *testing.T) {
	m := manifestFor(`{ "Path": "PG_VERSION", "Size": 3, "Last-Modified": "2026-11-21 10:00:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "2b0d5ad6" }`)
	parsed, err := ParseManifest(m)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if len(parsed.Files) != 1 || parsed.Files[0].Path != "PG_VERSION" || parsed.Files[0].Size != 3 ||
		len(parsed.WAL) != 1 || parsed.WAL[0].EndLSN != "0/2000100" {
		t.Fatalf("parsed %+v", parsed)
	}
	tampered := bytes.Replace(m, []byte(`"Size": 3`), []byte(`"Size": 4`), 1)
	if _, err := ParseManifest(tampered); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("tampered manifest: err = %v", err)
	}
}

func TestVerifyDirReportsEveryMismatch(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{"PG_VERSION": "15\n", "global/pg_control": "control", "extra": "x"}
	for name, content := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o700)
		os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600)
	}
	crc := func(s string) string {
		h, _ := newManifestHash("CRC32C")
		h.Write([]byte(s))
		return h.Hex()
	}
	m := manifestFor(strings.Join([]string{
		`{ "Path": "PG_VERSION", "Size": 3, "Checksum-Algorithm": "CRC32C", "Checksum": "` + crc("15\n") + `" }`,
		`{ "Path": "global/pg_control", "Size": 7, "Checksum-Algorithm": "CRC32C", "Checksum": "` + crc("CONTROL") + `" }`,
		`{ "Path": "base/1/1259", "Size": 0, "Checksum-Algorithm": "NONE" }`,
	}, ",\n"))
	os.WriteFile(filepath.Join(dir, ManifestName), m, 0o600)
	err := VerifyDir(context.Background(), dir)
	var ve *VerifyError
	if !errors.As(err, &ve) || len(ve.Problems) != 3 {
		t.Fatalf("err = %v, want 3 problems", err)
	}
	for _, want := range []string{"extra is in the backup but not in the manifest",
		"global/pg_control has CRC32C checksum", "base/1/1259 is in the manifest but not in the backup"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q missing from %v", want, err)
		}
	}
}

func TestCRC32CIsWrittenInPostgreSQLByteOrder(t *testing.T) {
	// CRC-32C("123456789") is 0xE3069283; PostgreSQL prints its bytes as stored
	// on a little-endian machine.
	h, _ := newManifestHash("CRC32C")
	h.Write([]byte("123456789"))
	if got := h.Hex(); got != "839206e3" {
		t.Fatalf("got %s", got)
	}
}

func TestExtractRefusesEntriesThatLeaveTheTarget(t *testing.T) {
	for _, tc := range []struct {
		name string
		hdr  tar.Header
	}{
		{"parent", tar.Header{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o600}},
		{"nested parent", tar.Header{Name: "base/../../evil", Typeflag: tar.TypeReg, Mode: 0o600}},
		{"absolute", tar.Header{Name: "/etc/evil", Typeflag: tar.TypeReg, Mode: 0o600}},
		{"symlink", tar.Header{Name: "base/link", Typeflag: tar.TypeSymlink, Linkname: "/etc"}},
		{"device", tar.Header{Name: "dev", Typeflag: tar.TypeChar}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			tw.WriteHeader(&tc.hdr)
			tw.Close()
			root := t.TempDir()
			dir := filepath.Join(root, "target")
			os.Mkdir(dir, 0o700)
			if _, err := ExtractTar(context.Background(), &buf, dir, nil); err == nil {
				t.Fatal("extracted an unsafe entry")
			}
			if _, err := os.Lstat(filepath.Join(root, "evil")); err == nil {
				t.Fatal("a file was written outside the target")
			}
		})
	}
}

func TestExtractWritesFilesWithTheirModes(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "base/", Typeflag: tar.TypeDir, Mode: 0o700})
	tw.WriteHeader(&tar.Header{Name: "base/1", Typeflag: tar.TypeReg, Mode: 0o640, Size: 5})
	tw.Write([]byte("hello"))
	tw.WriteHeader(&tar.Header{Name: "pg_tblspc/16384", Typeflag: tar.TypeSymlink, Linkname: "/old/place"})
	tw.Close()
	dir := t.TempDir()
	n, err := ExtractTar(context.Background(), &buf, dir, nil)
	if err != nil || n != 5 {
		t.Fatalf("extract: %d bytes, %v", n, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "base", "1"))
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("base/1: %v %v", fi, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "pg_tblspc", "16384")); err == nil {
		t.Error("a pg_tblspc link from the archive was followed; Unpack makes its own")
	}
}

func TestCommandHasPostgreSQL15Options(t *testing.T) {
	got := command{Label: "walhub main 20261121T104500Z", FastCheckpoint: true, MaxRate: 1024, ManifestChecksums: "CRC32C"}.String()
	want := "BASE_BACKUP (LABEL 'walhub main 20261121T104500Z', PROGRESS, CHECKPOINT 'fast', WAL false, WAIT false, " +
		"TABLESPACE_MAP, VERIFY_CHECKSUMS, MANIFEST 'yes', MANIFEST_CHECKSUMS 'CRC32C', MAX_RATE 1024)"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if got := (command{Label: "it's"}).String(); !strings.Contains(got, "LABEL 'it''s'") || !strings.Contains(got, "'spread'") {
		t.Fatalf("quoting or spread checkpoint: %s", got)
	}
}

func TestNeededSegments(t *testing.T) {
	const seg = 16 << 20
	for _, tc := range []struct {
		start, stop string
		from, to    walname.SegNo
	}{
		{"0/2000028", "0/2000100", 2, 3},
		{"0/2000028", "0/3000000", 2, 3}, // stop exactly at a boundary: segment 3 not needed
		{"0/2FFFF00", "0/3000100", 2, 4},
	} {
		start, _ := walname.ParseLSN(tc.start)
		stop, _ := walname.ParseLSN(tc.stop)
		if from, to := NeededSegments(start, stop, seg); from != tc.from || to != tc.to {
			t.Errorf("%s..%s: [%d, %d), want [%d, %d)", tc.start, tc.stop, from, to, tc.from, tc.to)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"16MB": 16 << 20, "1GB": 1 << 30, "1048576": 1 << 20, "512kB": 512 << 10} {
		if got, err := walname.ParseSize(in); err != nil || got != want {
			t.Errorf("%s: %d %v", in, got, err)
		}
	}
	if _, err := walname.ParseSize("big"); err == nil {
		t.Error("accepted nonsense")
	}
}

// storeFakeBackup stores a base archive holding files and a manifest that
// describes manifestFiles, and returns its catalog row.
func storeFakeBackup(t *testing.T, repo *repository.Repository, id string, files, manifestFiles map[string]string) catalog.Backup {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for name, content := range files {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(content))})
		tw.Write([]byte(content))
	}
	tw.Close()
	var entries []string
	for name, content := range manifestFiles {
		h, _ := newManifestHash("CRC32C")
		h.Write([]byte(content))
		entries = append(entries, fmt.Sprintf(`{ "Path": %q, "Size": %d, "Checksum-Algorithm": "CRC32C", "Checksum": %q }`,
			name, len(content), h.Hex()))
	}
	b := catalog.Backup{ID: id, StoredPath: storage.BackupDir("main", id)}
	ctx := context.Background()
	w, err := newArchiveWriter(ctx, repo, b, "base.tar.zst", Compression{Method: "zstd", Level: 1})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(tarBuf.Bytes())
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	m := manifestFor(strings.Join(entries, ",\n"))
	mw, err := repo.CreateBackupFile(ctx, b, ManifestName)
	if err != nil {
		t.Fatal(err)
	}
	mw.Write(m)
	if _, err := mw.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	b.Files = []catalog.BackupFile{{Name: "base.tar.zst", Compression: "zstd"}, {Name: ManifestName, Compression: "none"}}
	return b
}

func TestVerifyFindsDamageInAStoredArchive(t *testing.T) {
	repo := openTestRepo(t, t.TempDir())
	good := map[string]string{"PG_VERSION": "15\n", "base/1/1259": strings.Repeat("page", 4096)}
	b := storeFakeBackup(t, repo, "good", good, good)
	checked, err := Verify(context.Background(), RepoOpener(repo, b), b)
	if err != nil || checked.Files != 2 || checked.Bytes != 3+4*4096 {
		t.Fatalf("intact backup: %+v %v", checked, err)
	}

	damaged := map[string]string{"PG_VERSION": "15\n", "base/1/1259": strings.Repeat("page", 4095) + "PAGE"}
	b = storeFakeBackup(t, repo, "damaged", damaged, good)
	_, err = Verify(context.Background(), RepoOpener(repo, b), b)
	if err == nil || !strings.Contains(err.Error(), "base/1/1259 has CRC32C checksum") {
		t.Fatalf("damaged file: err = %v", err)
	}

	short := map[string]string{"PG_VERSION": "15\n"}
	b = storeFakeBackup(t, repo, "short", short, good)
	_, err = Verify(context.Background(), RepoOpener(repo, b), b)
	if err == nil || !strings.Contains(err.Error(), "base/1/1259 is in the manifest but not in the backup") {
		t.Fatalf("missing file: err = %v", err)
	}
}

func TestCommandAsksTheServerToCompress(t *testing.T) {
	for _, tc := range []struct {
		c    Compression
		want string // the options after MANIFEST_CHECKSUMS
	}{
		{Compression{Method: "zstd", Level: 1}, ")"},
		{Compression{Method: "none", Where: "server"}, ")"},
		{Compression{Method: "zstd", Level: 1, Where: "server"}, ", COMPRESSION 'zstd', COMPRESSION_DETAIL 'level=1')"},
		{Compression{Method: "zstd", Level: 2, Workers: 3, Where: "server"}, ", COMPRESSION 'zstd', COMPRESSION_DETAIL 'level=3,workers=3')"},
		{Compression{Method: "zstd", Level: 4, Where: "server"}, ", COMPRESSION 'zstd', COMPRESSION_DETAIL 'level=11')"},
	} {
		cmd := command{Label: "l", ManifestChecksums: "CRC32C"}
		cmd.Compression, cmd.CompressionDetail = tc.c.serverOptions()
		if got := cmd.String(); !strings.HasSuffix(got, "MANIFEST_CHECKSUMS 'CRC32C'"+tc.want) {
			t.Errorf("%+v: %s, want it to end in %q", tc.c, got, tc.want)
		}
	}
}

// TestServerCompressedArchiveIsStoredAsSentAndCheckedWhole: an archive the
// server compressed is stored byte for byte as it came, its tar stream goes
// to the check in order whatever the pieces, and a stream that does not
// decode whole (a flipped byte, cut short, a stray byte after it) is never
// committed: nothing of it is left.
func TestServerCompressedArchiveIsStoredAsSentAndCheckedWhole(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	repo := openTestRepo(t, root)
	plain := bytes.Repeat([]byte("a tar stream, more or less; "), 200000)
	for i := range plain {
		if i%97 == 0 {
			plain[i] = byte(i >> 8) // not all one pattern
		}
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	// Two frames, as a server may send (the decoder must take them all).
	sent := enc.EncodeAll(plain[len(plain)/2:], enc.EncodeAll(plain[:len(plain)/2], nil))
	flipped := bytes.Clone(sent)
	flipped[len(flipped)/3] ^= 0x40
	for _, tc := range []struct {
		name string
		sent []byte
		ok   bool
	}{
		{"whole", sent, true},
		{"a flipped byte", flipped, false},
		{"cut short", sent[:len(sent)-10], false},
		{"a stray byte after", append(bytes.Clone(sent), 0), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := catalog.Backup{ID: strings.ReplaceAll(tc.name, " ", "-"), StoredPath: storage.BackupDir("main", strings.ReplaceAll(tc.name, " ", "-"))}
			var got bytes.Buffer
			w, err := newServerArchiveWriter(ctx, repo, b, "base.tar.zst", func(p []byte) error {
				got.Write(p)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// In pieces of odd sizes, as CopyData messages come.
			for rest, n := tc.sent, 1; len(rest) > 0; n = n*3 + 1 {
				piece := rest[:min(n, len(rest))]
				rest = rest[len(piece):]
				if _, err := w.Write(piece); err != nil {
					break // the decoder stopped: Close says why
				}
			}
			err = w.Close(ctx)
			stored, readErr := os.ReadFile(filepath.Join(root, filepath.FromSlash(b.StoredPath), "base.tar.zst"))
			if !tc.ok {
				if err == nil || !strings.Contains(err.Error(), "does not decode") {
					t.Fatalf("Close = %v, want the stream refused", err)
				}
				if readErr == nil {
					t.Fatalf("a stream that does not decode was committed (%d bytes)", len(stored))
				}
				return
			}
			if err != nil {
				t.Fatalf("Close: %v", err)
			}
			if !bytes.Equal(stored, tc.sent) {
				t.Errorf("stored %d bytes, not the %d sent as they were", len(stored), len(tc.sent))
			}
			if !bytes.Equal(got.Bytes(), plain) || w.original != int64(len(plain)) {
				t.Errorf("the check got %d bytes (original %d), want the %d of the tar stream in order", got.Len(), w.original, len(plain))
			}
		})
	}
}

// TestAbortedServerArchiveStopsItsDecoder: an archive aborted mid-stream
// (the connection lost) leaves nothing, and its decoder goroutine ends.
func TestAbortedServerArchiveStopsItsDecoder(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	repo := openTestRepo(t, root)
	enc, _ := zstd.NewWriter(nil)
	sent := enc.EncodeAll(bytes.Repeat([]byte("x"), 1<<20), nil)
	b := catalog.Backup{ID: "aborted", StoredPath: storage.BackupDir("main", "aborted")}
	w, err := newServerArchiveWriter(ctx, repo, b, "base.tar.zst", func([]byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(sent[:len(sent)/2]); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { w.Abort(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Abort did not return: the decoder goroutine is stuck")
	}
	if !w.inflate.over || !errors.Is(w.inflate.err, errInflateAborted) {
		t.Errorf("decoder ended with %v, want it aborted", w.inflate.err)
	}
	if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(b.StoredPath), "base.tar.zst")); err == nil {
		t.Error("an aborted archive was committed")
	}
}

// TestAutoCompressesOnTheServerUnlessARateIsSet: left to choose, a backup
// has the server compress, except when a maximum rate is set (PostgreSQL
// would throttle the compressed bytes, not what it reads) or there is
// nothing to compress; a choice made in the configuration stays.
func TestAutoCompressesOnTheServerUnlessARateIsSet(t *testing.T) {
	for _, tc := range []struct {
		c       Compression
		maxRate int
		want    string
	}{
		{Compression{Method: "zstd", Where: "auto"}, 0, "server"},
		{Compression{Method: "zstd", Where: "auto"}, 1024, "hub"},
		{Compression{Method: "none", Where: "auto"}, 0, ""},
		{Compression{Method: "zstd", Where: "hub"}, 0, "hub"},
		{Compression{Method: "zstd", Where: "server"}, 1024, "server"},
		{Compression{Method: "zstd"}, 0, "hub"},
	} {
		if got := tc.c.resolve(tc.maxRate).on(); got != tc.want {
			t.Errorf("%+v with max rate %d: compressed on %q, want %q", tc.c, tc.maxRate, got, tc.want)
		}
	}
}

// TestServerCannotCompressIsTheBuildsRefusalOnly: only feature_not_supported
// (a build without zstd) lets a backup fall back to the hub's compression;
// a syntax error or a lost connection stays an error.
func TestServerCannotCompressIsTheBuildsRefusalOnly(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("BASE_BACKUP failed on the server: %w", &pgconn.PgError{Code: "0A000", Message: "zstd compression is not supported by this build"}), true},
		{fmt.Errorf("BASE_BACKUP failed on the server: %w", &pgconn.PgError{Code: "42601", Message: "invalid compression specification"}), false},
		{errors.New("BASE_BACKUP: connection lost: EOF"), false},
	} {
		if got := serverCannotCompress(tc.err); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.err, got, tc.want)
		}
	}
}
