// Package walname knows PostgreSQL's WAL file names and LSN arithmetic: segment,
// .partial, .history and .backup names, for every segment size PostgreSQL allows
// (a power of two from 1 MiB to 1 GiB). It touches no file system and no network.
package walname

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// LSN is a PostgreSQL log sequence number: a byte position in the WAL stream.
type LSN uint64

// String formats the LSN as PostgreSQL does ("16/B374D848").
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l)) }

// MarshalText formats the LSN as "X/Y", so JSON shows what PostgreSQL shows.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText parses the "X/Y" form.
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// ParseLSN parses the "X/Y" form PostgreSQL prints.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("invalid LSN %q: want the form X/Y with up to 8 hex digits each", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q: %w", s, err)
	}
	return LSN(h<<32 | l), nil
}

// TimeLine is a PostgreSQL timeline ID. Timeline 0 does not exist.
type TimeLine uint32

// SegNo is a WAL segment number: LSN / segment size.
type SegNo uint64

// Segment sizes PostgreSQL accepts for wal_segment_size.
const (
	MinSegmentSize = 1 << 20
	MaxSegmentSize = 1 << 30
)

// ValidSegmentSize reports whether size is a segment size PostgreSQL allows.
func ValidSegmentSize(size uint64) error {
	if size < MinSegmentSize || size > MaxSegmentSize || size&(size-1) != 0 {
		return fmt.Errorf("invalid WAL segment size %d: must be a power of two from 1 MiB to 1 GiB", size)
	}
	return nil
}

// SegmentsPerLog is how many segments of segSize make up one "log" (the
// middle 8 hex digits of a segment name), the bound of its last 8.
func SegmentsPerLog(segSize uint64) uint64 { return 0x100000000 / segSize }

// SegmentOf returns the number of the segment that holds lsn.
func SegmentOf(lsn LSN, segSize uint64) SegNo { return SegNo(uint64(lsn) / segSize) }

// SegmentStart returns the LSN at which segment n begins.
func SegmentStart(n SegNo, segSize uint64) LSN { return LSN(uint64(n) * segSize) }

// SegmentOffset returns lsn's byte offset inside its segment.
func SegmentOffset(lsn LSN, segSize uint64) uint64 { return uint64(lsn) % segSize }

// AlignDown rounds lsn down to the start of its segment.
func AlignDown(lsn LSN, segSize uint64) LSN { return lsn - LSN(uint64(lsn)%segSize) }

// SegmentName returns the 24-hex-digit file name of segment n on timeline tli.
func SegmentName(tli TimeLine, n SegNo, segSize uint64) string {
	per := SegmentsPerLog(segSize)
	return fmt.Sprintf("%08X%08X%08X", uint32(tli), uint32(uint64(n)/per), uint32(uint64(n)%per))
}

// HistoryName returns the name of timeline tli's history file ("00000002.history").
func HistoryName(tli TimeLine) string { return fmt.Sprintf("%08X.history", uint32(tli)) }

// Kind tells which sort of WAL file a name denotes.
type Kind int

// The kinds of names in pg_wal and in an archive.
const (
	KindSegment Kind = iota + 1 // 000000010000000000000001
	KindPartial                 // 000000010000000000000001.partial
	KindHistory                 // 00000002.history
	KindBackup                  // 000000010000000000000001.00000028.backup
)

func (k Kind) String() string {
	switch k {
	case KindSegment:
		return "segment"
	case KindPartial:
		return "partial"
	case KindHistory:
		return "history"
	case KindBackup:
		return "backup"
	}
	return "unknown"
}

// Name is a parsed WAL file name. For segment-based kinds, Log and Seg are the
// second and third groups of 8 hex digits; turning them into a segment number
// needs the segment size (see SegNo).
type Name struct {
	Kind     Kind
	TimeLine TimeLine
	Log, Seg uint32
	// Offset is the start offset inside the segment, for KindBackup only.
	Offset uint32
}

// ErrInvalidName is returned (wrapped) for any name that is not a WAL file name.
var ErrInvalidName = errors.New("not a WAL file name")

// MaxNameLen is the length of the longest valid name (a .backup file).
const MaxNameLen = 24 + 1 + 8 + len(".backup")

// Parse parses a WAL file name: a segment, a .partial, a .history or a .backup
// file. Hex digits must be upper case, as PostgreSQL writes them. Parse never
// accepts a path separator, so a parsed name is safe to join to a directory.
func Parse(s string) (Name, error) {
	bad := func(why string) (Name, error) {
		if len(s) > MaxNameLen+8 {
			s = s[:MaxNameLen+8] + "…"
		}
		return Name{}, fmt.Errorf("%w: %q: %s", ErrInvalidName, s, why)
	}
	if len(s) > MaxNameLen {
		return bad("too long")
	}
	switch {
	case strings.HasSuffix(s, ".history"):
		h := strings.TrimSuffix(s, ".history")
		if len(h) != 8 {
			return bad("a history file name is 8 hex digits and .history")
		}
		tli, ok := hex32(h)
		if !ok || tli == 0 {
			return bad("invalid timeline")
		}
		return Name{Kind: KindHistory, TimeLine: TimeLine(tli)}, nil
	case strings.HasSuffix(s, ".partial"):
		n, err := parseSegment(strings.TrimSuffix(s, ".partial"))
		if err != nil {
			return bad(err.Error())
		}
		n.Kind = KindPartial
		return n, nil
	case strings.HasSuffix(s, ".backup"):
		b := strings.TrimSuffix(s, ".backup")
		if len(b) != 33 || b[24] != '.' {
			return bad("a backup history file name is 24 hex digits, a dot, 8 hex digits and .backup")
		}
		n, err := parseSegment(b[:24])
		if err != nil {
			return bad(err.Error())
		}
		off, ok := hex32(b[25:])
		if !ok {
			return bad("invalid offset")
		}
		n.Kind, n.Offset = KindBackup, off
		return n, nil
	}
	n, err := parseSegment(s)
	if err != nil {
		return bad(err.Error())
	}
	return n, nil
}

func parseSegment(s string) (Name, error) {
	if len(s) != 24 {
		return Name{}, errors.New("a segment name is 24 hex digits")
	}
	tli, ok1 := hex32(s[0:8])
	log, ok2 := hex32(s[8:16])
	seg, ok3 := hex32(s[16:24])
	if !ok1 || !ok2 || !ok3 {
		return Name{}, errors.New("a segment name is 24 upper-case hex digits")
	}
	if tli == 0 {
		return Name{}, errors.New("timeline 0 does not exist")
	}
	return Name{Kind: KindSegment, TimeLine: TimeLine(tli), Log: log, Seg: seg}, nil
}

// hex32 parses exactly 8 upper-case hex digits.
func hex32(s string) (uint32, bool) {
	if len(s) != 8 {
		return 0, false
	}
	var v uint32
	for i := 0; i < 8; i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | uint32(c-'0')
		case c >= 'A' && c <= 'F':
			v = v<<4 | uint32(c-'A'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// SegNo returns the segment number of a segment, .partial or .backup name for
// the given segment size, and an error when the name cannot exist with that
// size (its low part is beyond the segments one log holds).
func (n Name) SegNo(segSize uint64) (SegNo, error) {
	if n.Kind == KindHistory {
		return 0, errors.New("a history file has no segment number")
	}
	per := SegmentsPerLog(segSize)
	if uint64(n.Seg) >= per {
		return 0, fmt.Errorf("%w: segment part %08X is out of range for %d-byte segments", ErrInvalidName, n.Seg, segSize)
	}
	return SegNo(uint64(n.Log)*per + uint64(n.Seg)), nil
}

// String formats the name back into its file name.
func (n Name) String() string {
	base := fmt.Sprintf("%08X%08X%08X", uint32(n.TimeLine), n.Log, n.Seg)
	switch n.Kind {
	case KindHistory:
		return HistoryName(n.TimeLine)
	case KindPartial:
		return base + ".partial"
	case KindBackup:
		return fmt.Sprintf("%s.%08X.backup", base, n.Offset)
	}
	return base
}

// ParseSegment parses a segment name (no suffix) and returns its timeline and
// number for the given segment size.
func ParseSegment(s string, segSize uint64) (TimeLine, SegNo, error) {
	n, err := Parse(s)
	if err != nil {
		return 0, 0, err
	}
	if n.Kind != KindSegment {
		return 0, 0, fmt.Errorf("%w: %q is a %s file, not a segment", ErrInvalidName, s, n.Kind)
	}
	no, err := n.SegNo(segSize)
	if err != nil {
		return 0, 0, err
	}
	return n.TimeLine, no, nil
}

// ParseSize reads a size as PostgreSQL's SHOW prints it ("16MB", "1GB",
// "512kB", "8192"), in bytes.
func ParseSize(s string) (uint64, error) {
	units := []struct {
		suffix string
		mult   uint64
	}{{"kB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"TB", 1 << 40}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseUint(num, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("invalid size %q", s)
			}
			return n * u.mult, nil
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	return n, nil
}
