// Package walrecord reads PostgreSQL 15 WAL records out of the raw bytes of
// WAL segments: page headers, record headers and CRCs, records that continue
// across pages and segments. It extracts what recovery targets need: restore
// points (XLOG_RESTORE_POINT) and the commit and abort records of
// transactions (with their xact_time), each with its LSN and xid.
//
// It trusts nothing it reads: every length is checked against what is there,
// a record whose header or CRC does not check out ends the valid WAL of its
// segment (as it ends recovery in PostgreSQL), and decoding resumes at the
// next segment. WAL is read as written by a little-endian server with 8 kB
// WAL pages (XLOG_BLCKSZ), the build every packaged PostgreSQL uses.
//
// Layouts follow PostgreSQL 15's src/include/access/xlog_internal.h
// (XLogPageHeaderData), xlogrecord.h (XLogRecord, block headers), xact.h and
// xlogreader.c (XLogDecodeNextRecord, DecodeXLogRecord).
package walrecord

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"

	"github.com/walhub/walhub/walname"
)

// PageSize is XLOG_BLCKSZ, the size of a WAL page.
const PageSize = 8192

// Page header layout (xlog_internal.h).
const (
	pageMagic        = 0xD110 // XLOG_PAGE_MAGIC of PostgreSQL 15
	shortHeaderSize  = 24     // MAXALIGN(sizeof(XLogPageHeaderData))
	longHeaderSize   = 40     // MAXALIGN(sizeof(XLogLongPageHeaderData))
	flagContRecord   = 0x0001 // XLP_FIRST_IS_CONTRECORD
	flagLongHeader   = 0x0002 // XLP_LONG_HEADER
	pageFlagsAll     = 0x000F // XLP_ALL_FLAGS
	recordHeaderSize = 24     // SizeOfXLogRecord
	crcOffset        = 20     // offsetof(XLogRecord, xl_crc)
	// maxRecordSize is XLogRecordMaxSize (1020 MB): no valid record is longer.
	maxRecordSize = 1020 * 1024 * 1024
)

// Resource managers and record types (rmgrlist.h, pg_control.h, xact.h).
const (
	rmXLog            = 0
	rmXact            = 1
	xlogSwitch        = 0x40
	xlogRestorePoint  = 0x70
	xactOpMask        = 0x70
	xactCommit        = 0x00
	xactAbort         = 0x20
	xactCommitPrep    = 0x30
	xactAbortPrep     = 0x40
	xactHasInfo       = 0x80
	restorePointBytes = 8 + 64 // xl_restore_point: rp_time, rp_name[MAXFNAMELEN]
)

// Kind is what an Event records.
type Kind uint8

// The kinds of records Decoder reports.
const (
	Commit Kind = iota + 1
	Abort
	CommitPrepared
	AbortPrepared
	RestorePoint
)

var kindNames = [...]string{"", "COMMIT", "ABORT", "COMMIT_PREPARED", "ABORT_PREPARED", "RESTORE_POINT"}

// String names the kind as pg_waldump does.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "UNKNOWN"
}

// IsXact reports whether the kind ends a transaction (a commit or an abort):
// the records recovery_target_time and recovery_target_xid stop at.
func (k Kind) IsXact() bool { return k >= Commit && k <= AbortPrepared }

// Event is one record of interest.
type Event struct {
	Kind Kind
	// LSN is where the record starts (what pg_waldump prints); End is the
	// first byte after it, aligned as XLogInsert returns it (what
	// pg_create_restore_point returns).
	LSN, End walname.LSN
	// XID is the transaction: the record's xid, or for a prepared
	// transaction's commit or abort the prepared transaction's xid.
	XID uint32
	// Time is xact_time for commits and aborts, rp_time for restore points.
	Time time.Time
	// Name is the restore point's name.
	Name string
}

// pgEpoch is PostgreSQL's timestamp epoch, 2000-01-01 00:00:00 UTC.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// pgTime converts a TimestampTz (microseconds since pgEpoch).
func pgTime(us int64) time.Time { return pgEpoch.Add(time.Duration(us) * time.Microsecond).UTC() }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Decoder states.
const (
	stSeek    = iota // at an aligned position where a record begins
	stHeader         // inside a record header
	stBody           // inside a record's data
	stCont           // skipping the continuation of a record whose start was not read
	stSegment        // no valid WAL until the next segment starts
)

// Decoder reads a WAL byte stream, fed in order through Write in chunks of
// any size, and collects the events it finds. Its state carries from one
// segment to the next, so a record that begins in one segment and ends in
// the next is decoded when its last byte arrives.
type Decoder struct {
	segSize uint64
	pos     walname.LSN // LSN of the next byte Write will receive
	page    []byte
	fill    int // bytes of page held

	state   int
	recLSN  walname.LSN
	hdr     [recordHeaderSize]byte
	totLen  uint32
	got     uint32 // bytes of the current record read, header included
	crc     uint32
	keep    bool
	body    []byte
	cont    uint32 // continuation bytes left to skip in stCont
	prev    walname.LSN
	hasPrev bool

	// verified is the end of the last record whose CRC checked, as long as
	// nothing since the decoder began was skipped unchecked (unverified).
	verified   walname.LSN
	unverified bool

	events []Event
	// Records counts the valid records read.
	Records int64
	// Invalid counts the places where valid WAL ended before its segment did
	// (other than the padding after an XLOG_SWITCH or zeroed space).
	Invalid int64
}

// NewDecoder returns a decoder for a server with the given segment size that
// will be fed WAL from start, which must be the start of a page.
func NewDecoder(segSize uint64, start walname.LSN) *Decoder {
	d := &Decoder{segSize: segSize, page: make([]byte, PageSize)}
	d.Reset(start)
	return d
}

// Reset forgets any record in progress: the next byte written is at start
// (the start of a page), as after a gap or on another timeline.
func (d *Decoder) Reset(start walname.LSN) {
	d.pos = start - start%PageSize
	d.fill = 0
	d.state = stSeek
	if uint64(d.pos)%d.segSize != 0 {
		// Without the start of the segment we cannot know where records begin.
		d.state = stSegment
	}
	d.hasPrev = false
	d.body = d.body[:0]
	d.verified, d.unverified = d.pos, d.state == stSegment
}

// Verified is the end (last byte + 1) of the WAL, from where the decoder
// began (NewDecoder, Reset or ResumeDecoder), that is proven whole: every
// record up to it passed its CRC check, every page header on the way checked
// out, and not one byte was skipped unchecked (the end of a record whose
// start the decoder does not hold, invalid or zeroed WAL, the padding after
// an XLOG_SWITCH). It stops advancing at the first such byte, so a torn page
// (its header intact, its second half zeroed) or a record cut short always
// lies at or after it. It is where the decoder began when no record checked.
func (d *Decoder) Verified() walname.LSN { return d.verified }

// VerifiedAtEnd is Verified once the input has ended: the page that the
// bytes fed last fall short of is decoded as if zero-filled to its end.
// Records that end within those bytes count; one whose CRC matches only over
// the zeros does not. The decoder must not be fed after it.
func (d *Decoder) VerifiedAtEnd() walname.LSN {
	if d.fill == 0 {
		return d.verified
	}
	limit, before := d.pos+walname.LSN(d.fill), d.verified
	clear(d.page[d.fill:])
	d.decodePage(d.page)
	d.pos += PageSize
	d.fill = 0
	if d.verified > limit {
		d.verified = before
	}
	return d.verified
}

// Pos is the LSN of the next byte Write expects.
func (d *Decoder) Pos() walname.LSN { return d.pos + walname.LSN(d.fill) }

// Events returns the events found since the last call and forgets them.
// The slice is the decoder's own, valid until the next Write: the next
// segment's events reuse its room (tens of thousands of commits per segment
// of a busy server's WAL, which would otherwise be allocated anew each time).
func (d *Decoder) Events() []Event {
	e := d.events
	d.events = d.events[:0]
	return e
}

// Write feeds WAL bytes, the ones following those written before. It never
// fails: invalid WAL is skipped, as described on the package.
func (d *Decoder) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if d.fill == 0 && len(p) >= PageSize {
			d.decodePage(p[:PageSize])
			p = p[PageSize:]
			d.pos += PageSize
			continue
		}
		c := copy(d.page[d.fill:], p)
		d.fill += c
		p = p[c:]
		if d.fill == PageSize {
			d.decodePage(d.page)
			d.fill = 0
			d.pos += PageSize
		}
	}
	return n, nil
}

// pageHeader validates the header of the page at d.pos and returns its
// flags, the remaining length of a continued record and the header size.
func (d *Decoder) pageHeader(page []byte) (info uint16, remLen uint32, size int, ok bool) {
	magic := binary.LittleEndian.Uint16(page[0:])
	info = binary.LittleEndian.Uint16(page[2:])
	addr := walname.LSN(binary.LittleEndian.Uint64(page[8:]))
	remLen = binary.LittleEndian.Uint32(page[16:])
	if magic != pageMagic || info&^pageFlagsAll != 0 || addr != d.pos {
		return 0, 0, 0, false
	}
	segStart := uint64(d.pos)%d.segSize == 0
	if segStart != (info&flagLongHeader != 0) {
		return 0, 0, 0, false
	}
	size = shortHeaderSize
	if segStart {
		if binary.LittleEndian.Uint32(page[32:]) != uint32(d.segSize) || binary.LittleEndian.Uint32(page[36:]) != PageSize {
			return 0, 0, 0, false
		}
		size = longHeaderSize
	}
	return info, remLen, size, true
}

// decodePage decodes one whole page, the one at d.pos.
func (d *Decoder) decodePage(page []byte) {
	segStart := uint64(d.pos)%d.segSize == 0
	if d.state == stSegment {
		if !segStart {
			return
		}
		d.state = stSeek
	}
	info, remLen, off, ok := d.pageHeader(page)
	if !ok {
		d.endOfWAL(true)
		return
	}
	mid := d.state == stHeader || d.state == stBody
	switch {
	case info&flagContRecord != 0 && mid && remLen == d.totLen-d.got && remLen > 0:
		// The record in progress goes on here.
	case info&flagContRecord != 0:
		// The end of a record whose start we do not hold (the first segment
		// read, or after invalid WAL): skip it.
		if mid {
			d.Invalid++
			d.hasPrev = false
		}
		d.state, d.cont, d.unverified = stCont, remLen, true
	case mid:
		// The record in progress was abandoned (XLP_FIRST_IS_OVERWRITE_CONTRECORD
		// after a crash): a new record starts here.
		d.state, d.hasPrev, d.unverified = stSeek, false, true
	case d.state == stCont:
		d.state = stSeek
	}
	for off < PageSize {
		switch d.state {
		case stCont:
			n := min(d.cont, uint32(PageSize-off))
			d.cont -= n
			off += int(n)
			if d.cont > 0 {
				return
			}
			off = align8(off)
			d.state = stSeek
		case stSeek:
			d.recLSN = d.pos + walname.LSN(off)
			d.got = 0
			d.state = stHeader
		case stHeader:
			n := copy(d.hdr[d.got:], page[off:])
			off += n
			d.got += uint32(n)
			if d.got >= 4 {
				d.totLen = binary.LittleEndian.Uint32(d.hdr[0:])
				if d.totLen == 0 {
					// Zeroed space: the WAL written so far ends here.
					d.endOfWAL(false)
					return
				}
				if d.totLen < recordHeaderSize || d.totLen > maxRecordSize {
					d.endOfWAL(true)
					return
				}
			}
			if d.got < recordHeaderSize {
				continue
			}
			if d.hasPrev && walname.LSN(binary.LittleEndian.Uint64(d.hdr[8:])) != d.prev {
				d.endOfWAL(true)
				return
			}
			d.crc = 0
			d.keep = interesting(d.hdr[17], d.hdr[16])
			d.body = d.body[:0]
			d.state = stBody
		case stBody:
			n := min(d.totLen-d.got, uint32(PageSize-off))
			chunk := page[off : off+int(n)]
			d.crc = crc32.Update(d.crc, castagnoli, chunk)
			if d.keep {
				d.body = append(d.body, chunk...)
			}
			off += int(n)
			d.got += n
			if d.got < d.totLen {
				continue
			}
			if !d.finishRecord() {
				return
			}
			off = align8(off)
		}
	}
}

// finishRecord checks the CRC of the record just read and reports it. It
// returns false when decoding of this segment stops.
func (d *Decoder) finishRecord() bool {
	crc := crc32.Update(d.crc, castagnoli, d.hdr[:crcOffset])
	if crc != binary.LittleEndian.Uint32(d.hdr[crcOffset:]) {
		d.endOfWAL(true)
		return false
	}
	d.Records++
	d.prev, d.hasPrev = d.recLSN, true
	end := d.recLSN + walname.LSN(d.totLen) + walname.LSN(pageHeadersWithin(d.recLSN, d.totLen, d.segSize))
	if !d.unverified {
		d.verified = end
	}
	end = (end + 7) &^ 7 // where the next record may start, as XLogInsert reports it
	rmid, info := d.hdr[17], d.hdr[16]
	if d.keep {
		if e, ok := decodeEvent(rmid, info, binary.LittleEndian.Uint32(d.hdr[4:]), d.body); ok {
			e.LSN, e.End = d.recLSN, end
			d.events = append(d.events, e)
		}
	}
	d.state = stSeek
	if rmid == rmXLog && info&0xF0 == xlogSwitch {
		// The rest of the segment is padding; the next record starts the next segment.
		d.state, d.unverified = stSegment, true
		return false
	}
	return true
}

// endOfWAL stops decoding until the next segment. invalid says the WAL was
// not merely zeroed but did not check out.
func (d *Decoder) endOfWAL(invalid bool) {
	if invalid {
		d.Invalid++
	}
	d.state = stSegment
	d.hasPrev, d.unverified = false, true
}

// pageHeadersWithin returns the bytes of page headers between the start of a
// record at lsn and its end, for a record of totLen bytes of its own.
func pageHeadersWithin(lsn walname.LSN, totLen uint32, segSize uint64) uint64 {
	var extra uint64
	pos := uint64(lsn)
	left := uint64(totLen)
	for {
		room := PageSize - pos%PageSize
		if left <= room {
			return extra
		}
		left -= room
		pos += room
		h := uint64(shortHeaderSize)
		if pos%segSize == 0 {
			h = longHeaderSize
		}
		extra += h
		pos += h
	}
}

func align8(off int) int { return (off + 7) &^ 7 }

// interesting reports whether a record's data is needed: restore points and
// the end of transactions.
func interesting(rmid, info uint8) bool {
	switch rmid {
	case rmXLog:
		return info&0xF0 == xlogRestorePoint
	case rmXact:
		switch info & xactOpMask {
		case xactCommit, xactAbort, xactCommitPrep, xactAbortPrep:
			return true
		}
	}
	return false
}

// decodeEvent turns a valid record's data (everything after its header) into an event.
func decodeEvent(rmid, info uint8, xid uint32, body []byte) (Event, bool) {
	main, ok := mainData(body)
	if !ok {
		return Event{}, false
	}
	if rmid == rmXLog {
		if len(main) < restorePointBytes {
			return Event{}, false
		}
		name := main[8:restorePointBytes]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		return Event{Kind: RestorePoint, Time: pgTime(int64(binary.LittleEndian.Uint64(main))), Name: string(name)}, true
	}
	if len(main) < 8 {
		return Event{}, false
	}
	e := Event{Time: pgTime(int64(binary.LittleEndian.Uint64(main))), XID: xid}
	op := info & xactOpMask
	switch op {
	case xactCommit:
		e.Kind = Commit
	case xactAbort:
		e.Kind = Abort
	case xactCommitPrep:
		e.Kind = CommitPrepared
	case xactAbortPrep:
		e.Kind = AbortPrepared
	}
	if info&xactHasInfo != 0 {
		if tx, ok := twoPhaseXID(main[8:], op == xactCommit || op == xactCommitPrep); ok {
			e.XID = tx
		}
	}
	return e, true
}

// xinfo flags of commit and abort records (xact.h, PostgreSQL 15).
const (
	xinfoDBInfo       = 1 << 0
	xinfoSubxacts     = 1 << 1
	xinfoRelFileNodes = 1 << 2
	xinfoInvals       = 1 << 3
	xinfoTwoPhase     = 1 << 4
	xinfoDroppedStats = 1 << 8
)

// twoPhaseXID reads, after xact_time, the xid of a prepared transaction from
// a commit or abort record's optional parts, in the order ParseCommitRecord
// and ParseAbortRecord read them.
func twoPhaseXID(data []byte, commit bool) (uint32, bool) {
	r := reader{b: data}
	xinfo := r.u32()
	if xinfo&xinfoDBInfo != 0 {
		r.skip(8)
	}
	if xinfo&xinfoSubxacts != 0 {
		r.skipCounted(4)
	}
	if xinfo&xinfoRelFileNodes != 0 {
		r.skipCounted(12) // RelFileNode
	}
	if xinfo&xinfoDroppedStats != 0 {
		r.skipCounted(12) // xl_xact_stats_item
	}
	if commit && xinfo&xinfoInvals != 0 {
		r.skipCounted(16) // SharedInvalidationMessage
	}
	if xinfo&xinfoTwoPhase == 0 {
		return 0, false
	}
	x := r.u32()
	return x, !r.bad
}

// reader reads little-endian values, remembering when it ran out of bytes.
type reader struct {
	b   []byte
	pos int
	bad bool
}

// need reports whether n more bytes are there; when not, the reader is bad.
func (r *reader) need(n int) bool {
	if r.bad || n < 0 || len(r.b)-r.pos < n {
		r.bad = true
		return false
	}
	return true
}

func (r *reader) u32() uint32 {
	if !r.need(4) {
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b[r.pos:])
	r.pos += 4
	return v
}

func (r *reader) skip(n int) {
	if r.need(n) {
		r.pos += n
	}
}

// skipCounted skips an int32 count followed by that many items of size bytes.
func (r *reader) skipCounted(size int) {
	n := int64(int32(r.u32()))
	if n < 0 || n*int64(size) > int64(len(r.b)) {
		r.bad = true
		return
	}
	r.skip(int(n) * size)
}

// Block reference ids and flags (xlogrecord.h).
const (
	blockIDMax       = 32  // XLR_MAX_BLOCK_ID
	blockIDDataShort = 255 // XLR_BLOCK_ID_DATA_SHORT
	blockIDDataLong  = 254 // XLR_BLOCK_ID_DATA_LONG
	blockIDOrigin    = 253 // XLR_BLOCK_ID_ORIGIN
	blockIDTopXID    = 252 // XLR_BLOCK_ID_TOPLEVEL_XID
	bkpHasImage      = 0x10
	bkpSameRel       = 0x80
	bimgHasHole      = 0x01
	bimgCompressed   = 0x04 | 0x08 | 0x10 // BKPIMAGE_COMPRESS_PGLZ, _LZ4, _ZSTD
)

// mainData finds a record's main data in its body (the bytes after the
// XLogRecord header), walking the block headers as DecodeXLogRecord does:
// block images and data come first, the main data last.
func mainData(body []byte) ([]byte, bool) {
	pos, total, mainLen := 0, 0, 0
	byteAt := func(i int) (int, bool) {
		if i >= len(body) {
			return 0, false
		}
		return int(body[i]), true
	}
	u16 := func(i int) (int, bool) {
		if i+2 > len(body) {
			return 0, false
		}
		return int(binary.LittleEndian.Uint16(body[i:])), true
	}
loop:
	for len(body)-pos > total {
		id := int(body[pos])
		pos++
		switch {
		case id == blockIDDataShort:
			n, ok := byteAt(pos)
			if !ok {
				return nil, false
			}
			pos++
			mainLen = n
			break loop
		case id == blockIDDataLong:
			if pos+4 > len(body) {
				return nil, false
			}
			mainLen = int(binary.LittleEndian.Uint32(body[pos:]))
			if mainLen < 0 || mainLen > len(body) {
				return nil, false
			}
			pos += 4
			break loop
		case id == blockIDOrigin:
			pos += 2
		case id == blockIDTopXID:
			pos += 4
		case id <= blockIDMax:
			flags, ok := byteAt(pos)
			dataLen, ok2 := u16(pos + 1)
			if !ok || !ok2 {
				return nil, false
			}
			pos += 3
			total += dataLen
			if flags&bkpHasImage != 0 {
				imgLen, ok := u16(pos)
				info, ok2 := byteAt(pos + 4)
				if !ok || !ok2 {
					return nil, false
				}
				pos += 5
				if info&bimgHasHole != 0 && info&bimgCompressed != 0 {
					pos += 2
				}
				total += imgLen
			}
			if flags&bkpSameRel == 0 {
				pos += 12 // RelFileNode
			}
			pos += 4 // BlockNumber
		default:
			return nil, false
		}
	}
	if pos > len(body) || pos+total+mainLen != len(body) {
		return nil, false
	}
	return body[len(body)-mainLen:], true
}

// stateVersion tags the encoding of MarshalState.
const stateVersion = 1

// maxCarry bounds the data of a record in progress that MarshalState keeps;
// a longer one (a rare commit record of over a megabyte) is skipped instead.
const maxCarry = 1 << 20

// MarshalState encodes the decoder's state between two segments, so that a
// restarted process can go on where it stopped (ResumeDecoder) and still
// decode a record that began before the restart. It may only be called when
// the decoder has been fed up to the end of a page.
func (d *Decoder) MarshalState() []byte {
	st, cont, body, hasPrev := d.state, d.cont, d.body, d.hasPrev
	if (st == stHeader || st == stBody) && len(body) > maxCarry {
		// Too long to carry: skip the rest without checking it. (A record
		// whose data is not needed carries no data, only its running CRC,
		// so that its end is checked too: see Verified.)
		st, cont, body, hasPrev = stCont, d.totLen-d.got, nil, false
	}
	if st != stBody && st != stHeader {
		body = nil
	}
	b := []byte{stateVersion, byte(st), boolByte(d.keep), boolByte(hasPrev)}
	b = binary.LittleEndian.AppendUint64(b, uint64(d.pos)+uint64(d.fill))
	b = binary.LittleEndian.AppendUint64(b, uint64(d.recLSN))
	b = append(b, d.hdr[:]...)
	b = binary.LittleEndian.AppendUint32(b, d.totLen)
	b = binary.LittleEndian.AppendUint32(b, d.got)
	b = binary.LittleEndian.AppendUint32(b, d.crc)
	b = binary.LittleEndian.AppendUint32(b, cont)
	b = binary.LittleEndian.AppendUint64(b, uint64(d.prev))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...)
}

const stateFixed = 4 + 8 + 8 + recordHeaderSize + 4*4 + 8 + 4

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// ResumeDecoder returns a decoder in the state MarshalState encoded.
func ResumeDecoder(segSize uint64, state []byte) (*Decoder, error) {
	if len(state) < stateFixed || state[0] != stateVersion || state[1] > stSegment {
		return nil, errors.New("walrecord: not a decoder state")
	}
	d := &Decoder{segSize: segSize, page: make([]byte, PageSize)}
	d.state, d.keep, d.hasPrev = int(state[1]), state[2] == 1, state[3] == 1
	le := binary.LittleEndian
	d.pos = walname.LSN(le.Uint64(state[4:]))
	d.recLSN = walname.LSN(le.Uint64(state[12:]))
	copy(d.hdr[:], state[20:20+recordHeaderSize])
	o := 20 + recordHeaderSize
	d.totLen, d.got, d.crc, d.cont = le.Uint32(state[o:]), le.Uint32(state[o+4:]), le.Uint32(state[o+8:]), le.Uint32(state[o+12:])
	d.prev = walname.LSN(le.Uint64(state[o+16:]))
	n := le.Uint32(state[o+24:])
	body := state[stateFixed:]
	switch {
	case uint64(n) != uint64(len(body)):
		return nil, errors.New("walrecord: truncated decoder state")
	case d.pos%PageSize != 0:
		return nil, errors.New("walrecord: decoder state not at a page boundary")
	case (d.state == stHeader || d.state == stBody) && (d.got > d.totLen || d.totLen < recordHeaderSize && d.got >= 4 ||
		d.got > recordHeaderSize && d.state == stHeader || d.got < recordHeaderSize && d.state == stBody):
		return nil, errors.New("walrecord: inconsistent decoder state")
	}
	d.body = append([]byte(nil), body...)
	d.verified = d.pos
	d.unverified = d.state == stCont || d.state == stSegment && uint64(d.pos)%segSize != 0
	return d, nil
}
