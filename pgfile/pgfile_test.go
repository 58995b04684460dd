package pgfile

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/walhub/walhub/test/pgtest"
	"github.com/walhub/walhub/walname"
)

const (
	testSegSize  = 1 << 20
	testSystemID = 7300000000000000042
)

// TestReadsWhatInitdbWrites reads pg_control and the first segment of a
// fresh cluster and compares them with what pg_controldata says.
func TestReadsWhatInitdbWrites(t *testing.T) {
	dir := pgtest.TempDir(t, "pgfile")
	data := filepath.Join(dir, "data")
	pgtest.Run(t, pgtest.ServerCommand(t, "initdb", "-D", data, "-U", "postgres", "--auth=trust",
		"--wal-segsize", "1", "--no-sync", "-E", "UTF8", "--locale=C"))
	out := pgtest.Run(t, pgtest.ServerCommand(t, "pg_controldata", "-D", data))
	m := regexp.MustCompile(`Database system identifier:\s+(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no system identifier in pg_controldata's output:\n%s", out)
	}
	want, _ := strconv.ParseUint(m[1], 10, 64)
	got, err := ControlSystemID(filepath.Join(data, "global", "pg_control"))
	if err != nil || got != want {
		t.Fatalf("ControlSystemID = %d, %v; pg_controldata says %d", got, err, want)
	}
	if m := regexp.MustCompile(`Bytes per WAL segment:\s+(\d+)`).FindStringSubmatch(out); m == nil {
		t.Errorf("no segment size in pg_controldata's output:\n%s", out)
	} else if size, err := ControlSegmentSize(filepath.Join(data, "global", "pg_control")); err != nil || strconv.FormatUint(size, 10) != m[1] {
		t.Errorf("ControlSegmentSize = %d, %v; pg_controldata says %s", size, err, m[1])
	}
	// The segment of the last checkpoint's redo point is in pg_wal, written.
	m = regexp.MustCompile(`REDO WAL file:\s+([0-9A-F]{24})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no redo WAL file in pg_controldata's output:\n%s", out)
	}
	name := m[1]
	seg, err := os.ReadFile(filepath.Join(data, "pg_wal", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckSegmentHeader(seg[:LongPageHeaderSize], name, testSegSize, want); err != nil {
		t.Errorf("initdb's first segment refused: %v", err)
	}
	h, _ := ParseSegmentHeader(seg)
	_, segno, _ := walname.ParseSegment(name, testSegSize)
	if h.SystemID != want || h.BlockSize != 8192 || h.PageAddr != walname.SegmentStart(segno, testSegSize) {
		t.Errorf("header %+v", h)
	}
}

func TestSegmentHeaderRoundTrip(t *testing.T) {
	want := NewSegmentHeader(3, 7, testSegSize, testSystemID)
	want.RemLen = 123
	b := make([]byte, LongPageHeaderSize)
	want.Put(b)
	got, err := ParseSegmentHeader(b)
	if err != nil || got != want {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
	if _, err := ParseSegmentHeader(b[:39]); err == nil {
		t.Error("a 39-byte header parsed")
	}
}

func TestCheckSegmentHeader(t *testing.T) {
	good := make([]byte, LongPageHeaderSize)
	NewSegmentHeader(1, 5, testSegSize, testSystemID).Put(good)
	name5 := walname.SegmentName(1, 5, testSegSize)
	if err := CheckSegmentHeader(good, name5, testSegSize, testSystemID); err != nil {
		t.Fatalf("valid header refused: %v", err)
	}
	if err := CheckSegmentHeader(good, name5, testSegSize, 0); err != nil {
		t.Fatalf("valid header refused without a system identifier to compare: %v", err)
	}
	tests := []struct {
		name    string
		segName string
		sysid   uint64
		mutate  func(h *SegmentHeader)
		short   bool
		want    string
	}{
		{"recycled segment under another name", walname.SegmentName(1, 6, testSegSize), testSystemID, nil, false, "stale"},
		{"another cluster", name5, 99, nil, false, "database system"},
		{"not a long header", name5, testSystemID, func(h *SegmentHeader) { h.Info = 0 }, false, "long page header"},
		{"wrong size", name5, testSystemID, func(h *SegmentHeader) { h.SegmentSize = 16 << 20 }, false, "bytes long"},
		{"future timeline", name5, testSystemID, func(h *SegmentHeader) { h.TimeLine = 3 }, false, "timeline"},
		{"too short", name5, testSystemID, nil, true, "shorter"},
	}
	for _, tt := range tests {
		h := NewSegmentHeader(1, 5, testSegSize, testSystemID)
		if tt.mutate != nil {
			tt.mutate(&h)
		}
		b := make([]byte, LongPageHeaderSize)
		h.Put(b)
		if tt.short {
			b = b[:20]
		}
		err := CheckSegmentHeader(b, tt.segName, testSegSize, tt.sysid)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error about %q", tt.name, err, tt.want)
		}
	}
}

func TestControlSystemID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pg_control")
	var b [8192]byte
	PutControlSystemID(b[:], testSystemID)
	if err := os.WriteFile(path, b[:], 0o600); err != nil {
		t.Fatal(err)
	}
	if id, err := ControlSystemID(path); err != nil || id != testSystemID {
		t.Errorf("got %d, %v", id, err)
	}
	os.WriteFile(path, b[:4], 0o600)
	if _, err := ControlSystemID(path); err == nil {
		t.Error("a 4-byte pg_control read")
	}
	if _, err := ControlSystemID(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing pg_control read")
	}
}

func TestControlSegmentSize(t *testing.T) {
	valid := func() []byte {
		b := make([]byte, 8192)
		putControlSegmentSize(b, 16<<20)
		return b
	}
	tests := []struct {
		name  string
		b     []byte
		want  uint64
		error string
	}{
		{"PostgreSQL 15's layout", valid(), 16 << 20, ""},
		{"another layout", func() []byte { b := valid(); b[controlVersionOffset] = 0xa4; return b }(), 0, "pg_control version"},
		{"a size PostgreSQL does not allow", func() []byte { b := valid(); b[controlSegSizeOffset] = 1; return b }(), 0, "segment size"},
		{"too short", valid()[:100], 0, "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pg_control")
			if err := os.WriteFile(path, tt.b, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ControlSegmentSize(path)
			if got != tt.want || (tt.error == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.error)) {
				t.Errorf("got %d, %v; want %d, an error about %q", got, err, tt.want, tt.error)
			}
		})
	}
}
