package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/test/s3test"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// secretMarker is written into a table: it must never be found in the
// repository's stored bytes while the repository is encrypted.
const secretMarker = "WALHUB-SECRET-MARKER-7f3a"

// secretChecksum fingerprints the marker table and the pgbench data.
const secretChecksum = `SELECT md5(string_agg(id::text || ':' || v, ',' ORDER BY id)) || ` +
	`(SELECT md5(string_agg(aid::text || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts) FROM secret`

// newKey makes an age key with `walhub keygen` and returns its path and ID.
func newKey(t *testing.T, dir, name string) (path, id string) {
	t.Helper()
	path = filepath.Join(dir, name+".key")
	out, err := exec.Command(filepath.Join(binDir, "walhub"), "keygen", "--output", path).CombinedOutput()
	if err != nil {
		t.Fatalf("walhub keygen: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`key ([0-9a-f]{16}) written`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("walhub keygen printed %q", out)
	}
	return path, string(m[1])
}

// encryptionSection is the [encryption] section for a current key and
// previous ones.
func encryptionSection(key string, previous ...string) string {
	sec := fmt.Sprintf("[encryption]\nkey = %q\n", "file:"+key)
	if len(previous) > 0 {
		quoted := make([]string, len(previous))
		for i, p := range previous {
			quoted[i] = fmt.Sprintf("%q", "file:"+p)
		}
		sec += "previous_keys = [" + strings.Join(quoted, ", ") + "]\n"
	}
	return sec
}

// newEncryptedSite is a site whose repository is encrypted with a new key,
// storing WAL and backups uncompressed (so that, but for the encryption, the
// marker would be in the stored bytes as it is).
func newEncryptedSite(t *testing.T, opts ...pgtest.Options) (s *site, keyPath, keyID string) {
	t.Helper()
	keyPath, keyID = newKey(t, pgtest.TempDir(t, "keys"), "repo")
	p := pgtest.NewPrimary(t, "primary", append(opts, pgtest.Options{})[0])
	s = newSiteWith(t, p, p, func(s *site) string {
		s.repo = filepath.Join(s.dir, "repo")
		return fmt.Sprintf("repository = %q\n", s.repo) + encryptionSection(keyPath)
	}, `compression = "none"`)
	return s, keyPath, keyID
}

// withEncryption writes to path the site's configuration with its
// [encryption] section (from) replaced by to, and returns path.
func (s *site) withEncryption(path, from, to string) string {
	s.t.Helper()
	cfg, err := os.ReadFile(s.config)
	if err != nil || !strings.Contains(string(cfg), from) {
		s.t.Fatalf("%s holds no %q (%v)", s.config, from, err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(cfg), from, to, 1)), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return path
}

// writeSecret fills the marker table.
func writeSecret(p *pgtest.Cluster, from, to int) {
	p.Query(fmt.Sprintf(`CREATE TABLE IF NOT EXISTS secret (id int PRIMARY KEY, v text);
		INSERT INTO secret SELECT g, '%s-' || g FROM generate_series(%d, %d) g`, secretMarker, from, to))
}

// filesHolding lists the files under root whose bytes contain marker,
// skipping the segment being received (.partial: the local working area,
// plaintext by design).
func filesHolding(t *testing.T, root, marker string) (hits []string, scanned int) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".partial") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		scanned++
		if bytes.Contains(b, []byte(marker)) {
			hits = append(hits, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits, scanned
}

// hubFetch fetches path from the hub with the read token: the status, the
// body, and the error that cut the body short, if one did.
func (s *site) hubFetch(path string) (int, []byte, error) {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.hubURL+path, nil)
	req.Header.Set("Authorization", "Bearer read-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// storedSegments lists the stored segment files of server main, oldest first.
func storedSegments(t *testing.T, s *site) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(s.repo, "main", "wal"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && regexp.MustCompile(`^[0-9A-F]{24}$`).MatchString(d.Name()) {
			out = append(out, path)
		}
		return nil
	})
	return out
}

// TestEncryptedRepositoryHoldsNoPlaintextAndRestoresIdentically writes a
// marker into a table, streams and backs it up into an encrypted repository,
// and checks that no stored byte holds the marker, while a point-in-time
// restore and a standby fed by walfetch (both decrypting through the hub)
// give exactly the primary's data.
func TestEncryptedRepositoryHoldsNoPlaintextAndRestoresIdentically(t *testing.T) {
	t.Parallel()
	s, _, keyID := newEncryptedSite(t)
	p := s.primary
	p.PgbenchInit(1)
	writeSecret(p, 1, 5000)
	s.walhub("backup", "--server", "main")
	writeSecret(p, 5001, 10000)
	p.Pgbench(2, 200)
	p.Query("SELECT pg_create_restore_point('encrypted_rp')")
	want := p.Query(secretChecksum)
	writeSecret(p, 10001, 12000)
	s.waitArchived()

	hits, scanned := filesHolding(t, s.repo, secretMarker)
	if len(hits) > 0 {
		t.Fatalf("the marker is in the repository's bytes: %v", hits)
	}
	if scanned < 5 {
		t.Fatalf("only %d files scanned", scanned)
	}
	// The marker did reach the repository: the hub serves it decrypted.
	var found bool
	for _, f := range storedSegments(t, s) {
		body := s.hubGet("/v1/servers/main/wal/"+filepath.Base(f), "read-secret")
		found = found || bytes.Contains(body, []byte(secretMarker))
	}
	if !found {
		t.Fatal("no segment served by the hub holds the marker: the test proves nothing")
	}
	if out := s.walhub("keys"); !strings.Contains(out, keyID) || !strings.Contains(out, "current") {
		t.Fatalf("walhub keys:\n%s", out)
	}
	if out := s.walhub("verify", "--server", "main"); !strings.Contains(out, "OK") {
		t.Fatalf("verify: %s", out)
	}

	t.Run("pitr", func(t *testing.T) {
		dir := filepath.Join(pgtest.TempDir(t, "pitr"), "data")
		s.walhub("restore", "--server", "main", "--target-dir", dir, "--target-name", "encrypted_rp",
			"--target-action", "promote", "--walfetch-token-file", s.tokenFile)
		c := startRestored(t, "pitr", dir)
		waitPromoted(t, c)
		if got := c.Query(secretChecksum); got != want {
			t.Fatal("data restored to the restore point differs from the primary's at that point")
		}
	})
	t.Run("walfetch standby", func(t *testing.T) {
		dir := filepath.Join(pgtest.TempDir(t, "standby"), "data")
		s.walhub("restore", "--server", "main", "--target-dir", dir, "--standby", "--walfetch-token-file", s.tokenFile)
		c := startRestored(t, "standby", dir)
		writeSecret(p, 12001, 13000)
		c.WaitReplay(s.waitArchived(), 180*time.Second)
		if got, want := c.Query(secretChecksum), p.Query(secretChecksum); got != want {
			t.Fatal("the standby's data differs from the primary's")
		}
	})
}

// TestEncryptedRepositoryRefusesTamperingAndWrongKeys flips one byte of a
// stored segment and of a backup archive: the hub refuses to serve the
// segment (walfetch leaves nothing at %p), verify names both objects, and a
// restore fails. A configuration with another key, or none, fails with a
// message naming the key the objects need, and writes nothing.
func TestEncryptedRepositoryRefusesTamperingAndWrongKeys(t *testing.T) {
	t.Parallel()
	s, keyPath, keyID := newEncryptedSite(t)
	p := s.primary
	p.PgbenchInit(1)
	writeSecret(p, 1, 1000)
	s.walhub("backup", "--server", "main")
	s.waitArchived()
	scratch := pgtest.TempDir(t, "tamper")

	// Another key, and no key: refused before anything is written.
	otherKey, otherID := newKey(t, scratch, "other")
	for _, tc := range []struct{ name, sections, want string }{
		{"wrong key", encryptionSection(otherKey), keyID},
		{"no key", "", "configure [encryption]"},
	} {
		cfg := s.withEncryption(filepath.Join(scratch, tc.name+".toml"), encryptionSection(keyPath), tc.sections)
		dir := filepath.Join(scratch, strings.ReplaceAll(tc.name, " ", "-"))
		out, err := exec.Command(filepath.Join(binDir, "walhub"), "restore", "--config", cfg, "--server", "main",
			"--target-dir", dir, "--walfetch-token-file", s.tokenFile, "--owner", pgOwner()).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Fatalf("%s: restore: %v, want an error naming %s:\n%s", tc.name, err, tc.want, out)
		}
		if tc.name == "wrong key" && !strings.Contains(string(out), otherID) {
			t.Errorf("%s: the error does not name the configured key %s:\n%s", tc.name, otherID, out)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s: the refused restore left %s", tc.name, dir)
		}
		if strings.Contains(string(out), "AGE-SECRET-KEY") {
			t.Fatalf("%s: a secret key was printed", tc.name)
		}
	}
	key, _ := os.ReadFile(keyPath)
	secret := regexp.MustCompile(`AGE-SECRET-KEY-1[0-9A-Z]+`).Find(key)
	if secret == nil || s.logContains(string(secret)) || s.logContains(string(secret[20:40])) {
		t.Fatal("the daemon logged the secret key (or the key file has none)")
	}

	// A flipped byte in a stored segment: refused by the hub and walfetch.
	segs := storedSegments(t, s)
	if len(segs) < 2 {
		t.Fatalf("stored segments: %v", segs)
	}
	bad := segs[len(segs)-2]
	flipByte(t, bad, 1000)
	name := filepath.Base(bad)
	// Refused: an error status, or (had the hub already started the body)
	// a body cut short; never the whole object.
	if code, body, err := s.hubFetch("/v1/servers/main/wal/" + name); code == http.StatusOK && err == nil {
		t.Fatalf("the hub served a tampered segment (%d bytes)", len(body))
	}
	pwal := filepath.Join(scratch, "pg_wal")
	os.MkdirAll(pwal, 0o755)
	fetch := exec.Command(filepath.Join(binDir, "walfetch"), "--url", s.hubURL, "--server", "main", "--token-file", s.tokenFile,
		"--prefetch", "0", name, filepath.Join(pwal, "RECOVERYXLOG"))
	fetch.Dir = scratch
	if out, err := fetch.CombinedOutput(); err == nil {
		t.Fatalf("walfetch of a tampered segment succeeded:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(pwal, "RECOVERYXLOG")); !os.IsNotExist(err) {
		t.Fatal("walfetch left a file at RECOVERYXLOG for a tampered segment")
	}
	if out, err := s.tryWalhub("verify", "--backup", "none", "--wal"); err == nil || !strings.Contains(out, "WAL: FAILED") ||
		!strings.Contains(out, "segment "+name) || strings.Count(out, "\n  segment") != 1 {
		t.Fatalf("verify --wal with one tampered segment: %v\n%s", err, out)
	}

	// A flipped byte in a backup archive: verify says which object, restore fails.
	archives, _ := filepath.Glob(filepath.Join(s.repo, "main", "backups", "*", "base.tar*"))
	if len(archives) != 1 {
		t.Fatalf("backup archives: %v", archives)
	}
	flipByte(t, archives[0], 5000)
	out, err := s.tryWalhub("verify", "--server", "main")
	if err == nil || !strings.Contains(out, "FAILED") || !strings.Contains(out, "base.tar") {
		t.Fatalf("verify of a tampered backup: %v\n%s", err, out)
	}
	dir := filepath.Join(scratch, "restore-tampered")
	if out, err := s.tryWalhub("restore", "--server", "main", "--target-dir", dir, "--walfetch-token-file", s.tokenFile); err == nil {
		t.Fatalf("restore of a tampered backup succeeded:\n%s", out)
	}
}

// flipByte flips one bit of the byte at off in the file at path.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestEncryptionKeyRotationRestoresAcrossKeys backs up under one key, rotates
// to a second (the first becomes a previous key), streams more WAL under the
// second, and restores the first backup through WAL under both keys. Without
// the previous key the restore fails naming it.
func TestEncryptionKeyRotationRestoresAcrossKeys(t *testing.T) {
	t.Parallel()
	s, oldKey, oldID := newEncryptedSite(t)
	p := s.primary
	p.PgbenchInit(1)
	writeSecret(p, 1, 2000)
	s.walhub("backup", "--server", "main")
	p.Pgbench(2, 100)
	s.waitArchived()

	s.stopServe()
	newKeyPath, newID := newKey(t, filepath.Dir(oldKey), "rotated")
	s.withEncryption(s.config, encryptionSection(oldKey), encryptionSection(newKeyPath, oldKey))
	s.startServe()
	writeSecret(p, 2001, 4000)
	p.Pgbench(2, 100)
	want := p.Query(secretChecksum)
	s.waitArchived()

	out := s.walhub("keys", "--output", "json")
	for _, id := range []string{oldID, newID} {
		if !regexp.MustCompile(`"id": "` + id + `",\s*"role": "(current|previous)",\s*"segments": [1-9]`).MatchString(out) {
			t.Fatalf("walhub keys does not show segments under %s:\n%s", id, out)
		}
	}

	dir := filepath.Join(pgtest.TempDir(t, "rotated"), "data")
	s.walhub("restore", "--server", "main", "--target-dir", dir, "--walfetch-token-file", s.tokenFile)
	c := startRestored(t, "rotated", dir)
	waitPromoted(t, c)
	if got := c.Query(secretChecksum); got != want {
		t.Fatal("data restored across a key rotation differs from the primary's")
	}

	// Without the previous key, its objects cannot be read, and say so.
	cfg := s.withEncryption(filepath.Join(s.dir, "new-only.toml"), encryptionSection(newKeyPath, oldKey), encryptionSection(newKeyPath))
	o, err := exec.Command(filepath.Join(binDir, "walhub"), "verify", "--config", cfg, "--server", "main").CombinedOutput()
	if err == nil || !strings.Contains(string(o), oldID) {
		t.Fatalf("verify without the previous key: %v\n%s", err, o)
	}
}

// TestEncryptedCatalogRebuiltGivenTheKey deletes the catalog of an encrypted
// repository and rebuilds it from the store with walhub repair
// --rebuild-catalog: the same rows as before, key IDs included. Without the
// key the rebuild fails naming it, and leaves no catalog behind.
func TestEncryptedCatalogRebuiltGivenTheKey(t *testing.T) {
	t.Parallel()
	s, keyPath, keyID := newEncryptedSite(t, pgtest.Options{SegmentSizeMB: 1})
	p := s.primary
	p.PgbenchInit(1)
	writeSecret(p, 1, 1000)
	s.walhub("backup", "--server", "main")
	p.Pgbench(2, 100)
	s.waitArchived()
	s.stopServe()

	catPath := filepath.Join(s.repo, storage.CatalogFile)
	before, beforeKeys := dumpCatalog(t, catPath), keyUsage(t, catPath)
	if !strings.Contains(beforeKeys, keyID) || strings.Contains(beforeKeys, "{KeyID: ") {
		t.Fatalf("key usage before the rebuild: %s", beforeKeys)
	}
	removeCatalog := func() {
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if err := os.Remove(catPath + suffix); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
	}
	removeCatalog()

	otherKey, _ := newKey(t, s.dir, "other")
	cfg := s.withEncryption(filepath.Join(s.dir, "other.toml"), encryptionSection(keyPath), encryptionSection(otherKey))
	out, err := exec.Command(filepath.Join(binDir, "walhub"), "repair", "--rebuild-catalog", "--config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), keyID) {
		t.Fatalf("rebuild with another key: %v\n%s", err, out)
	}
	removeCatalog()

	s.walhub("repair", "--rebuild-catalog")
	if after := dumpCatalog(t, catPath); after != before {
		t.Fatalf("rebuilt catalog differs:\n%s\nwant\n%s", after, before)
	}
	if after := keyUsage(t, catPath); after != beforeKeys {
		t.Fatalf("key usage after the rebuild: %s, want %s", after, beforeKeys)
	}
	if out := s.walhub("verify", "--server", "main"); !strings.Contains(out, "OK") {
		t.Fatalf("verify after the rebuild: %s", out)
	}
}

// keyUsage is the catalog's KeyUsage, as text.
func keyUsage(t *testing.T, path string) string {
	t.Helper()
	cat, err := catalog.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	use, err := cat.KeyUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%+v", use)
}

// TestEncryptedS3RepositoryHoldsNoPlaintext is the marker test with the
// repository in a bucket: no object the bucket's owner can read holds the
// marker, and a point-in-time restore over HTTP from the S3-backed hub (backup
// and WAL decrypted by the hub) reaches the primary's data.
func TestEncryptedS3RepositoryHoldsNoPlaintext(t *testing.T) {
	t.Parallel()
	bucket := s3test.Start(t)
	keyPath, _ := newKey(t, pgtest.TempDir(t, "keys"), "repo")
	p := pgtest.NewPrimary(t, "primary", pgtest.Options{})
	s := newSiteWith(t, p, p, func(s *site) string {
		s.repo = filepath.Join(s.dir, "work")
		return bucket.TOML(s3Prefix, s.repo, s.dir) + encryptionSection(keyPath)
	}, `compression = "none"`)
	p.PgbenchInit(1)
	writeSecret(p, 1, 5000)
	s.walhub("backup", "--server", "main")
	writeSecret(p, 5001, 8000)
	p.Query("SELECT pg_create_restore_point('s3_encrypted')")
	want := p.Query(secretChecksum)
	writeSecret(p, 8001, 9000)
	s.waitArchived()

	keys := bucket.Objects(s3Prefix + "/")
	var segments int
	for _, key := range keys {
		out, err := bucket.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: &bucket.Bucket, Key: &key})
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		b, err := io.ReadAll(out.Body)
		out.Body.Close()
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		if bytes.Contains(b, []byte(secretMarker)) {
			t.Fatalf("the bucket's object %s holds the marker", key)
		}
		if strings.Contains(key, "/wal/0") {
			segments++
		}
	}
	if segments < 2 || !slices.Contains(keys, s3Prefix+"/encryption.json") {
		t.Fatalf("bucket objects: %v", keys)
	}

	dir := filepath.Join(pgtest.TempDir(t, "pitr"), "data")
	cmd := exec.Command(filepath.Join(binDir, "walhub"), "restore", "--config", "/nonexistent/walhub.toml",
		"--hub-url", s.hubURL, "--server", "main", "--target-dir", dir, "--target-name", "s3_encrypted",
		"--target-action", "promote", "--walfetch-token-file", s.tokenFile, "--owner", pgOwner())
	cmd.Env = append(os.Environ(), "WALHUB_TOKEN=read-secret")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restore over HTTP from the encrypted S3-backed hub: %v\n%s", err, out)
	}
	c := startRestored(t, "pitr", dir)
	waitPromoted(t, c)
	if got := c.Query(secretChecksum); got != want {
		t.Fatal("PITR from the encrypted bucket reached other data than the primary's at the restore point")
	}
}
