// Package pgfile reads the PostgreSQL file formats walhub checks: the long
// page header that opens every WAL segment, and the database system
// identifier and WAL segment size in global/pg_control. Every command that
// decodes one of them goes through here. Both are written by PostgreSQL in
// the machine's native byte order (PostgreSQL 15 layouts:
// XLogLongPageHeaderData, ControlFileData).
package pgfile

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/walhub/walhub/walname"
)

// LongPageHeaderSize is the size of XLogLongPageHeaderData on a 64-bit
// build: the bytes of a segment that SegmentHeader describes.
const LongPageHeaderSize = 40

// xlpLongHeader is XLP_LONG_HEADER, the flag in xlp_info of a segment's first page.
const xlpLongHeader = 0x0002

// SegmentHeader is the long page header at the start of a WAL segment.
type SegmentHeader struct {
	Magic       uint16           // xlp_magic: WAL format version
	Info        uint16           // xlp_info: flag bits
	TimeLine    walname.TimeLine // xlp_tli: timeline of the first record on the page
	PageAddr    walname.LSN      // xlp_pageaddr: the LSN of the page, the segment's start
	RemLen      uint32           // xlp_rem_len: bytes of a record continued from the previous segment
	SystemID    uint64           // xlp_sysid: the database system identifier
	SegmentSize uint32           // xlp_seg_size
	BlockSize   uint32           // xlp_xlog_blcksz
}

// ParseSegmentHeader decodes the long page header from the first bytes of a
// segment. It checks only that there are enough bytes; Check judges them.
func ParseSegmentHeader(b []byte) (SegmentHeader, error) {
	if len(b) < LongPageHeaderSize {
		return SegmentHeader{}, fmt.Errorf("%d bytes are shorter than a page header", len(b))
	}
	return SegmentHeader{
		Magic:       binary.NativeEndian.Uint16(b[0:]),
		Info:        binary.NativeEndian.Uint16(b[2:]),
		TimeLine:    walname.TimeLine(binary.NativeEndian.Uint32(b[4:])),
		PageAddr:    walname.LSN(binary.NativeEndian.Uint64(b[8:])),
		RemLen:      binary.NativeEndian.Uint32(b[16:]),
		SystemID:    binary.NativeEndian.Uint64(b[24:]),
		SegmentSize: binary.NativeEndian.Uint32(b[32:]),
		BlockSize:   binary.NativeEndian.Uint32(b[36:]),
	}, nil
}

// Put writes the header into the first LongPageHeaderSize bytes of b, as
// PostgreSQL lays it out (for tests and benchmarks that make segments).
func (h SegmentHeader) Put(b []byte) {
	_ = b[LongPageHeaderSize-1]
	binary.NativeEndian.PutUint16(b[0:], h.Magic)
	binary.NativeEndian.PutUint16(b[2:], h.Info)
	binary.NativeEndian.PutUint32(b[4:], uint32(h.TimeLine))
	binary.NativeEndian.PutUint64(b[8:], uint64(h.PageAddr))
	binary.NativeEndian.PutUint32(b[16:], h.RemLen)
	binary.NativeEndian.PutUint64(b[24:], h.SystemID)
	binary.NativeEndian.PutUint32(b[32:], h.SegmentSize)
	binary.NativeEndian.PutUint32(b[36:], h.BlockSize)
}

// NewSegmentHeader is the long header PostgreSQL writes at the start of
// segment segno of tli (no record continued into it, 8 kB pages).
func NewSegmentHeader(tli walname.TimeLine, segno walname.SegNo, segSize, systemID uint64) SegmentHeader {
	return SegmentHeader{Magic: 0xD110, Info: xlpLongHeader, TimeLine: tli,
		PageAddr: walname.SegmentStart(segno, segSize), SystemID: systemID,
		SegmentSize: uint32(segSize), BlockSize: 8192}
}

// CheckSegmentHeader checks the long page header that opens every segment
// (hdr, its first bytes) against the segment's name, the server's segment
// size and, when systemID is not 0, the cluster. A stale or recycled segment
// under a final name fails here, not in PostgreSQL (where it would cause
// endless "unexpected pageaddr" retries).
func CheckSegmentHeader(hdr []byte, name string, segSize uint64, systemID uint64) error {
	h, err := ParseSegmentHeader(hdr)
	if err != nil {
		return fmt.Errorf("segment %s is shorter than a page header", name)
	}
	tli, segno, err := walname.ParseSegment(name, segSize)
	if err != nil {
		return err
	}
	switch want := walname.SegmentStart(segno, segSize); {
	case h.Info&xlpLongHeader == 0:
		return fmt.Errorf("segment %s does not start with a long page header", name)
	case h.PageAddr != want:
		return fmt.Errorf("segment %s starts at %s, not at %s: a stale or misnamed segment", name, h.PageAddr, want)
	case h.TimeLine > tli:
		return fmt.Errorf("segment %s holds pages of timeline %d", name, h.TimeLine)
	case uint64(h.SegmentSize) != segSize:
		return fmt.Errorf("segment %s says it is %d bytes long, not %d", name, h.SegmentSize, segSize)
	case systemID != 0 && h.SystemID != systemID:
		return fmt.Errorf("segment %s belongs to database system %d, this data directory to %d", name, h.SystemID, systemID)
	}
	return nil
}

// ControlSystemID reads the database system identifier, the first field of
// pg_control (global/pg_control in a data directory).
//
// It uses plain system calls, not an os.File: walfetch calls it on every
// spool hit, and the first os.File of a program sets up Go's I/O poller.
func ControlSystemID(path string) (uint64, error) {
	var b [8]byte
	if err := readControl(path, b[:]); err != nil {
		return 0, err
	}
	return binary.NativeEndian.Uint64(b[:]), nil
}

// Offsets in ControlFileData (pg_control.h) of the fields ControlSegmentSize
// reads, in the layout of pg_control_version 1300 (PostgreSQL 13 to 16) on a
// 64-bit build; checked against pg_controldata (TestReadsWhatInitdbWrites).
const (
	controlVersionOffset = 8   // pg_control_version
	controlSegSizeOffset = 228 // xlog_seg_size
	controlVersion       = 1300
)

// ControlSegmentSize reads the WAL segment size a cluster was initialised
// with (xlog_seg_size) from its pg_control. A pg_control of another layout
// than PostgreSQL 15's, or a size PostgreSQL does not allow, is an error.
func ControlSegmentSize(path string) (uint64, error) {
	var b [controlSegSizeOffset + 4]byte
	if err := readControl(path, b[:]); err != nil {
		return 0, err
	}
	if v := binary.NativeEndian.Uint32(b[controlVersionOffset:]); v != controlVersion {
		return 0, fmt.Errorf("%s: pg_control version %d, walhub reads %d (PostgreSQL 13 to 16)", path, v, controlVersion)
	}
	size := uint64(binary.NativeEndian.Uint32(b[controlSegSizeOffset:]))
	if err := walname.ValidSegmentSize(size); err != nil {
		return 0, fmt.Errorf("%s: WAL segment size: %w", path, err)
	}
	return size, nil
}

// putControlSegmentSize writes pg_control_version and size where pg_control
// keeps them in b (for tests).
func putControlSegmentSize(b []byte, size uint64) {
	binary.NativeEndian.PutUint32(b[controlVersionOffset:], controlVersion)
	binary.NativeEndian.PutUint32(b[controlSegSizeOffset:], uint32(size))
}

// readControl fills b from the start of the pg_control at path, with plain
// system calls (see ControlSystemID).
func readControl(path string, b []byte) error {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	n, err := syscall.Pread(fd, b, 0)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if n < len(b) {
		return fmt.Errorf("read %s: %w", path, io.ErrUnexpectedEOF)
	}
	return nil
}

// PutControlSystemID writes systemID where pg_control keeps it, in the
// first bytes of b (for tests that make a data directory's pg_control).
func PutControlSystemID(b []byte, systemID uint64) {
	binary.NativeEndian.PutUint64(b[:8], systemID)
}
