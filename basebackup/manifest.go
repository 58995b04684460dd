package basebackup

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"sort"
	"strings"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/walname"
)

// ManifestFile is one file listed in a backup manifest.
type ManifestFile struct {
	// Path is relative to the data directory, slash-separated
	// ("base/5/16384", "pg_tblspc/16385/PG_15_202209061/5/16390").
	Path      string
	Size      int64
	Algorithm string
	// Checksum is the hex checksum as the manifest writes it ("" for NONE).
	Checksum string
}

// WALRange is one WAL range of a manifest: what recovery must replay.
type WALRange struct {
	TimeLine uint32
	StartLSN string
	EndLSN   string
}

// Manifest is a parsed backup_manifest.
type Manifest struct {
	Version int
	Files   []ManifestFile
	WAL     []WALRange
}

type manifestJSON struct {
	Version *int `json:"PostgreSQL-Backup-Manifest-Version"`
	Files   []struct {
		Path        string `json:"Path"`
		EncodedPath string `json:"Encoded-Path"`
		Size        *int64 `json:"Size"`
		Algorithm   string `json:"Checksum-Algorithm"`
		Checksum    string `json:"Checksum"`
	} `json:"Files"`
	WALRanges []struct {
		Timeline uint32 `json:"Timeline"`
		Start    string `json:"Start-LSN"`
		End      string `json:"End-LSN"`
	} `json:"WAL-Ranges"`
	ManifestChecksum string `json:"Manifest-Checksum"`
}

// ParseManifest parses a backup_manifest and checks its own SHA-256
// checksum, as pg_verifybackup does.
func ParseManifest(data []byte) (*Manifest, error) {
	var raw manifestJSON
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("backup manifest: %w", err)
	}
	if raw.Version == nil || *raw.Version != 1 {
		return nil, errors.New("backup manifest: missing or unsupported PostgreSQL-Backup-Manifest-Version (want 1)")
	}
	if err := checkManifestChecksum(data, raw.ManifestChecksum); err != nil {
		return nil, err
	}
	m := &Manifest{Version: *raw.Version}
	for i, f := range raw.Files {
		p := f.Path
		if f.EncodedPath != "" {
			b, err := hex.DecodeString(f.EncodedPath)
			if err != nil {
				return nil, fmt.Errorf("backup manifest: file %d: Encoded-Path: %w", i, err)
			}
			p = string(b)
		}
		if p == "" || f.Size == nil {
			return nil, fmt.Errorf("backup manifest: file %d: missing path or size", i)
		}
		alg := strings.ToUpper(f.Algorithm)
		if alg == "" {
			alg = "NONE"
		}
		if _, err := newManifestHash(alg); err != nil {
			return nil, fmt.Errorf("backup manifest: file %s: %w", p, err)
		}
		m.Files = append(m.Files, ManifestFile{Path: p, Size: *f.Size, Algorithm: alg, Checksum: strings.ToLower(f.Checksum)})
	}
	for _, w := range raw.WALRanges {
		m.WAL = append(m.WAL, WALRange{TimeLine: w.Timeline, StartLSN: w.Start, EndLSN: w.End})
	}
	return m, nil
}

// checkManifestChecksum checks the SHA-256 of everything before the
// "Manifest-Checksum" line.
func checkManifestChecksum(data []byte, want string) error {
	if want == "" {
		return errors.New("backup manifest: no Manifest-Checksum")
	}
	i := bytes.LastIndex(data, []byte(`"Manifest-Checksum"`))
	if i < 0 {
		return errors.New("backup manifest: no Manifest-Checksum")
	}
	nl := bytes.LastIndexByte(data[:i], '\n')
	if nl < 0 {
		return errors.New("backup manifest: Manifest-Checksum is not on a line of its own")
	}
	sum := sha256.Sum256(data[:nl+1])
	if got := hex.EncodeToString(sum[:]); got != strings.ToLower(want) {
		return fmt.Errorf("backup manifest: its checksum is %s but it says %s: the manifest is damaged", got, want)
	}
	return nil
}

// manifestHash computes a manifest checksum in the manifest's hex form.
type manifestHash interface {
	Write(p []byte) (int, error)
	// Hex returns the checksum as the manifest writes it.
	Hex() string
}

type cryptoHash struct{ h hash.Hash }

func (c cryptoHash) Write(p []byte) (int, error) { return c.h.Write(p) }
func (c cryptoHash) Hex() string                 { return hex.EncodeToString(c.h.Sum(nil)) }

// crc32cHash writes the CRC-32C as PostgreSQL does: the 4 bytes of the value in
// the machine's (little-endian) byte order, in hex.
type crc32cHash struct{ h hash.Hash32 }

func (c crc32cHash) Write(p []byte) (int, error) { return c.h.Write(p) }
func (c crc32cHash) Hex() string {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], c.h.Sum32())
	return hex.EncodeToString(b[:])
}

type noHash struct{}

func (noHash) Write(p []byte) (int, error) { return len(p), nil }
func (noHash) Hex() string                 { return "" }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func newManifestHash(algorithm string) (manifestHash, error) {
	switch algorithm {
	case "NONE":
		return noHash{}, nil
	case "CRC32C":
		return crc32cHash{crc32.New(castagnoli)}, nil
	case "SHA224":
		return cryptoHash{sha256.New224()}, nil
	case "SHA256":
		return cryptoHash{sha256.New()}, nil
	case "SHA384":
		return cryptoHash{sha512.New384()}, nil
	case "SHA512":
		return cryptoHash{sha512.New()}, nil
	}
	return nil, fmt.Errorf("unknown checksum algorithm %q", algorithm)
}

// fileCheck verifies files against a manifest as they are read, and reports
// every problem at the end.
type fileCheck struct {
	want     map[string]ManifestFile
	seen     map[string]bool
	problems []string
	// ignore lists paths not to check (e.g. a rewritten tablespace_map).
	ignore  map[string]bool
	checked Checked
}

func newFileCheck(m *Manifest, ignore []string) *fileCheck {
	c := &fileCheck{want: make(map[string]ManifestFile, len(m.Files)), seen: map[string]bool{}, ignore: map[string]bool{}}
	for _, f := range m.Files {
		c.want[f.Path] = f
	}
	for _, p := range ignore {
		c.ignore[p] = true
	}
	return c
}

// maxProblems bounds the problems listed in one error.
const maxProblems = 20

func (c *fileCheck) problem(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// expect says which manifest entry the file at path must match, and
// counts it as seen; want is nil for a path not to check, ok false for a
// path the manifest does not have. The size and checksum are then checked
// by whoever reads the file.
func (c *fileCheck) expect(path string) (want *ManifestFile, ok bool) {
	c.seen[path] = true
	if c.ignore[path] {
		return nil, true
	}
	mf, ok := c.want[path]
	if !ok {
		return nil, false
	}
	return &mf, true
}

// file checks the file at path (relative to the data directory) by reading r
// to its end.
func (c *fileCheck) file(path string, r io.Reader, buf []byte) error {
	if c.ignore[path] {
		c.seen[path] = true
		return nil
	}
	mf, ok := c.want[path]
	if !ok {
		c.problem("%s is in the backup but not in the manifest", path)
		return nil
	}
	h, _ := newManifestHash(mf.Algorithm)
	var size int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			size += int64(n)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			c.seen[path] = true
			return fmt.Errorf("read %s: %w", path, err)
		}
	}
	c.compare(path, size, mf.Algorithm, h.Hex())
	return nil
}

// compare checks the file at path, whose size and checksum (of the named
// algorithm, in the manifest's hex form) were computed by the caller.
func (c *fileCheck) compare(path string, size int64, algorithm, checksum string) {
	if c.ignore[path] {
		c.seen[path] = true
		return
	}
	mf, ok := c.want[path]
	if !ok {
		c.problem("%s is in the backup but not in the manifest", path)
		return
	}
	c.seen[path] = true
	c.checked.Files++
	c.checked.Bytes += size
	if size != mf.Size {
		c.problem("%s has size %d, the manifest says %d", path, size, mf.Size)
		return
	}
	switch {
	case mf.Algorithm == "NONE":
	case algorithm != mf.Algorithm:
		c.problem("%s has a %s checksum in the manifest, but was checked with %s", path, mf.Algorithm, algorithm)
	case checksum != mf.Checksum:
		c.problem("%s has %s checksum %s, the manifest says %s", path, mf.Algorithm, checksum, mf.Checksum)
	}
}

// result returns an error listing every problem, including the manifest's
// files that were never seen.
func (c *fileCheck) result() error {
	var missing []string
	for p := range c.want {
		if !c.seen[p] && !c.ignore[p] {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	for _, p := range missing {
		c.problem("%s is in the manifest but not in the backup", p)
	}
	if len(c.problems) == 0 {
		return nil
	}
	shown := c.problems
	more := ""
	if len(shown) > maxProblems {
		more = fmt.Sprintf("\n  ... and %d more", len(shown)-maxProblems)
		shown = shown[:maxProblems]
	}
	return &VerifyError{Problems: c.problems, msg: fmt.Sprintf("%d problem(s):\n  %s%s", len(c.problems), strings.Join(shown, "\n  "), more)}
}

// VerifyError lists what verification found wrong.
type VerifyError struct {
	Problems []string
	msg      string
}

func (e *VerifyError) Error() string { return "backup does not match its manifest: " + e.msg }

// checkWALRanges checks that the manifest's WAL ranges, the WAL a restore of
// the backup must replay, begin at backup b's start position on its start
// timeline and end at its stop position on its stop timeline: the range the
// backup waits for in the catalog is the one the server wrote in the manifest.
func checkWALRanges(m *Manifest, b catalog.Backup) error {
	var problems []string
	var start, stop bool
	for _, r := range m.WAL {
		s, err1 := walname.ParseLSN(r.StartLSN)
		e, err2 := walname.ParseLSN(r.EndLSN)
		if err := errors.Join(err1, err2); err != nil {
			problems = append(problems, fmt.Sprintf("WAL range %s-%s on timeline %d: %v", r.StartLSN, r.EndLSN, r.TimeLine, err))
			continue
		}
		if e < s {
			problems = append(problems, fmt.Sprintf("WAL range %s-%s on timeline %d ends before it starts", s, e, r.TimeLine))
		}
		start = start || (walname.TimeLine(r.TimeLine) == b.StartTLI && s == b.StartLSN)
		stop = stop || (walname.TimeLine(r.TimeLine) == b.StopTLI && e == b.StopLSN)
	}
	if !start {
		problems = append(problems, fmt.Sprintf("no WAL range of the manifest starts at the backup's start %s on timeline %d",
			b.StartLSN, b.StartTLI))
	}
	if !stop {
		problems = append(problems, fmt.Sprintf("no WAL range of the manifest ends at the backup's stop %s on timeline %d",
			b.StopLSN, b.StopTLI))
	}
	if len(problems) == 0 {
		return nil
	}
	return &VerifyError{Problems: problems, msg: fmt.Sprintf("%d problem(s):\n  %s", len(problems), strings.Join(problems, "\n  "))}
}
