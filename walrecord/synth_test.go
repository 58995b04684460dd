package walrecord

import (
	"encoding/binary"
	"hash/crc32"
	"slices"
	"testing"
	"time"

	"github.com/walhub/walhub/walname"
)

// synth lays out WAL records on pages as PostgreSQL does, for tests: page
// headers (long at segment starts), records aligned to 8 bytes, continuation
// pages with XLP_FIRST_IS_CONTRECORD and xlp_rem_len, CRCs.
type synth struct {
	segSize uint64
	start   walname.LSN
	buf     []byte
	prev    walname.LSN
}

func newSynth(segSize uint64, start walname.LSN) *synth {
	return &synth{segSize: segSize, start: start}
}

func (s *synth) pos() walname.LSN { return s.start + walname.LSN(len(s.buf)) }

// pageHeader starts a page; remLen > 0 marks it as continuing a record.
func (s *synth) pageHeader(remLen uint32) {
	lsn := s.pos()
	long := uint64(lsn)%s.segSize == 0
	info := uint16(0)
	if remLen > 0 {
		info |= flagContRecord
	}
	size := shortHeaderSize
	if long {
		info |= flagLongHeader
		size = longHeaderSize
	}
	h := make([]byte, size)
	binary.LittleEndian.PutUint16(h[0:], pageMagic)
	binary.LittleEndian.PutUint16(h[2:], info)
	binary.LittleEndian.PutUint32(h[4:], 1)
	binary.LittleEndian.PutUint64(h[8:], uint64(lsn))
	binary.LittleEndian.PutUint32(h[16:], remLen)
	if long {
		binary.LittleEndian.PutUint64(h[24:], 7000000000000000001)
		binary.LittleEndian.PutUint32(h[32:], uint32(s.segSize))
		binary.LittleEndian.PutUint32(h[36:], PageSize)
	}
	s.buf = append(s.buf, h...)
}

// record appends a record with the given main data and returns its LSN.
func (s *synth) record(rmid, info uint8, xid uint32, main []byte) walname.LSN {
	for len(s.buf)%8 != 0 {
		s.buf = append(s.buf, 0)
	}
	if uint64(s.pos())%PageSize == 0 {
		s.pageHeader(0)
	}
	var body []byte
	if len(main) <= 255 {
		body = append([]byte{blockIDDataShort, byte(len(main))}, main...)
	} else {
		body = binary.LittleEndian.AppendUint32([]byte{blockIDDataLong}, uint32(len(main)))
		body = append(body, main...)
	}
	rec := make([]byte, recordHeaderSize, recordHeaderSize+len(body))
	binary.LittleEndian.PutUint32(rec[0:], uint32(recordHeaderSize+len(body)))
	binary.LittleEndian.PutUint32(rec[4:], xid)
	binary.LittleEndian.PutUint64(rec[8:], uint64(s.prev))
	rec[16], rec[17] = info, rmid
	rec = append(rec, body...)
	crc := crc32.Update(0, castagnoli, rec[recordHeaderSize:])
	crc = crc32.Update(crc, castagnoli, rec[:crcOffset])
	binary.LittleEndian.PutUint32(rec[crcOffset:], crc)
	lsn := s.pos()
	s.prev = lsn
	for len(rec) > 0 {
		room := PageSize - int(uint64(s.pos())%PageSize)
		n := min(room, len(rec))
		s.buf = append(s.buf, rec[:n]...)
		rec = rec[n:]
		if len(rec) > 0 {
			s.pageHeader(uint32(len(rec)))
		}
	}
	for len(s.buf)%8 != 0 {
		s.buf = append(s.buf, 0)
	}
	return lsn
}

// fill appends no-op records (an unknown resource manager) until pos reaches at least lsn.
func (s *synth) fillTo(lsn walname.LSN) {
	for s.pos() < lsn {
		n := min(int(lsn-s.pos()), 3000)
		s.record(21, 0, 0, make([]byte, n))
	}
}

// pad zero-fills to the end of the current segment.
func (s *synth) pad() {
	for uint64(s.pos())%s.segSize != 0 {
		s.buf = append(s.buf, 0)
	}
}

func pgTimestamp(t time.Time) []byte {
	return binary.LittleEndian.AppendUint64(nil, uint64(t.Sub(pgEpoch).Microseconds()))
}

func commitData(t time.Time) []byte { return pgTimestamp(t) }

func restorePointData(t time.Time, name string) []byte {
	b := pgTimestamp(t)
	n := make([]byte, 64)
	copy(n, name)
	return append(b, n...)
}

// TestAcrossSegments checks records whose header or data continue into the
// next page and the next segment, fed through one decoder and through a
// decoder restarted at a segment boundary that first re-reads the previous
// segment.
func TestAcrossSegments(t *testing.T) {
	const segSize = 1 << 20
	now := time.Date(2026, 12, 2, 10, 0, 0, 123456000, time.UTC)
	s := newSynth(segSize, 0)
	var want []Event
	add := func(e Event, lsn walname.LSN) {
		e.LSN = lsn
		want = append(want, e)
	}
	add(Event{Kind: Commit, XID: 100, Time: now}, s.record(rmXact, xactCommit, 100, commitData(now)))
	// A restore point whose header is split across a page boundary.
	s.fillTo(PageSize - 400)
	for uint64(s.pos())%PageSize != PageSize-8 {
		if (PageSize-8-uint64(s.pos())%PageSize)%32 == 0 {
			s.record(21, 0, 0, nil) // 32 bytes aligned
		} else {
			s.record(21, 0, 0, make([]byte, 7)) // 40
		}
	}
	add(Event{Kind: RestorePoint, Time: now, Name: "split-header"}, s.record(rmXLog, xlogRestorePoint, 0, restorePointData(now, "split-header")))
	// A commit whose data runs from the end of segment 0 into segment 1.
	s.fillTo(segSize - 100)
	big := append(commitData(now.Add(time.Second)), make([]byte, 20000)...)
	add(Event{Kind: Commit, XID: 101, Time: now.Add(time.Second)}, s.record(rmXact, xactCommit, 101, big))
	add(Event{Kind: Abort, XID: 102, Time: now.Add(2 * time.Second)}, s.record(rmXact, xactAbort, 102, commitData(now.Add(2*time.Second))))
	// An XLOG_SWITCH, then zeros to the end of segment 1.
	s.record(rmXLog, xlogSwitch, 0, nil)
	s.pad()
	add(Event{Kind: RestorePoint, Time: now, Name: "after-switch"}, s.record(rmXLog, xlogRestorePoint, 0, restorePointData(now, "after-switch")))
	s.fillTo(3*segSize - 5)
	s.pad()

	d := NewDecoder(segSize, 0)
	d.Write(s.buf)
	got := d.Events()
	check := func(what string, got []Event) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d events, want %d: %+v", what, len(got), len(want), got)
		}
		for i := range want {
			g := got[i]
			g.End = 0
			if g != want[i] {
				t.Errorf("%s: event %d = %+v, want %+v", what, i, g, want[i])
			}
		}
	}
	check("one decoder", got)
	if d.Invalid != 0 {
		t.Errorf("%d invalid places", d.Invalid)
	}
	if got[2].End <= segSize {
		t.Errorf("the commit crossing into segment 1 ends at %s", got[2].End)
	}

	// Restart at segment 1 without state: the commit that began in segment 0
	// is lost, unless segment 0 is read again first.
	cold := NewDecoder(segSize, segSize)
	cold.Write(s.buf[segSize:])
	if n := len(cold.Events()); n != len(want)-3 {
		t.Errorf("cold start at segment 1: %d events, want %d", n, len(want)-3)
	}
	primed := NewDecoder(segSize, 0)
	primed.Write(s.buf[:segSize])
	// Events is valid until the next Write, which reuses its room.
	before := slices.Clone(primed.Events())
	primed.Write(s.buf[segSize:])
	check("primed", append(before, primed.Events()...))

	// Restart at segment 1 from the state saved after segment 0.
	first := NewDecoder(segSize, 0)
	first.Write(s.buf[:segSize])
	before = first.Events()
	resumed, err := ResumeDecoder(segSize, first.MarshalState())
	if err != nil {
		t.Fatal(err)
	}
	if resumed.Pos() != segSize {
		t.Fatalf("resumed at %s", resumed.Pos())
	}
	resumed.Write(s.buf[segSize:])
	check("resumed", append(before, resumed.Events()...))
}

// TestEventsReuseTheirRoom: the receiver's index drains a decoder's events
// after every segment, tens of thousands of commits in a busy server's
// segment; the next segment's events go into the same room instead of a
// slice grown anew from nothing each time.
func TestEventsReuseTheirRoom(t *testing.T) {
	const segSize = 1 << 20
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	s := newSynth(segSize, 0)
	for xid := uint32(100); s.pos() < segSize-PageSize; xid++ {
		s.record(rmXact, xactCommit, xid, commitData(now))
	}
	s.pad()
	d := NewDecoder(segSize, 0)
	d.Write(s.buf)
	n := len(d.Events())
	if n < 1000 {
		t.Fatalf("%d events in the segment", n)
	}
	allocs := testing.AllocsPerRun(5, func() {
		d.Reset(0)
		d.Write(s.buf)
		if got := len(d.Events()); got != n {
			t.Fatalf("%d events, want %d", got, n)
		}
	})
	if allocs != 0 {
		t.Errorf("decoding a segment again allocates %.0f times", allocs)
	}
}

// FuzzResumeDecoder checks that any state blob is refused or gives a
// decoder that can be fed without panicking.
func FuzzResumeDecoder(f *testing.F) {
	const segSize = 1 << 20
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	s := newSynth(segSize, 0)
	s.fillTo(PageSize - 100)
	s.record(rmXact, xactCommit, 5, append(commitData(now), make([]byte, 300)...))
	s.fillTo(3 * PageSize)
	d := NewDecoder(segSize, 0)
	d.Write(s.buf[:PageSize])
	f.Add(d.MarshalState(), s.buf[PageSize:])
	f.Fuzz(func(t *testing.T, state, data []byte) {
		d, err := ResumeDecoder(segSize, state)
		if err != nil {
			return
		}
		d.Write(data)
		d.Events()
		d.MarshalState()
	})
}

// TestInvalidWALEndsSegment checks that a bad CRC ends the valid WAL of a
// segment and decoding resumes at the next one.
func TestInvalidWALEndsSegment(t *testing.T) {
	const segSize = 1 << 20
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	s := newSynth(segSize, 0)
	s.record(rmXact, xactCommit, 5, commitData(now))
	bad := s.record(rmXact, xactCommit, 6, commitData(now))
	s.record(rmXact, xactCommit, 7, commitData(now))
	s.fillTo(segSize - 1000)
	s.pad()
	s.prev = 0 // the next segment starts a new chain, as after invalid WAL
	s.record(rmXact, xactCommit, 8, commitData(now))
	s.fillTo(segSize + 2*PageSize)
	s.pad()
	s.buf[bad+recordHeaderSize+3] ^= 0xFF // corrupt the record's data

	d := NewDecoder(segSize, 0)
	d.Write(s.buf)
	var xids []uint32
	for _, e := range d.Events() {
		xids = append(xids, e.XID)
	}
	if len(xids) != 2 || xids[0] != 5 || xids[1] != 8 || d.Invalid != 1 {
		t.Fatalf("xids %v, %d invalid places; want [5 8], 1", xids, d.Invalid)
	}
}

// FuzzDecoder feeds arbitrary bytes (seeded with valid WAL) in arbitrary
// chunks: the decoder must never panic or read out of bounds.
func FuzzDecoder(f *testing.F) {
	const segSize = 1 << 20
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	s := newSynth(segSize, 0)
	s.record(rmXact, xactCommit, 5, commitData(now))
	s.record(rmXLog, xlogRestorePoint, 0, restorePointData(now, "rp"))
	s.record(rmXact, xactCommitPrep|xactHasInfo, 0, append(commitData(now), 0x10, 0, 0, 0, 9, 0, 0, 0))
	s.fillTo(3 * PageSize)
	f.Add(s.buf, uint16(100))
	f.Add(s.buf[:PageSize+100], uint16(7))
	f.Add([]byte{}, uint16(1))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16) {
		d := NewDecoder(segSize, 0)
		c := int(chunk)%9000 + 1
		for len(data) > 0 {
			n := min(c, len(data))
			d.Write(data[:n])
			data = data[n:]
		}
		for _, e := range d.Events() {
			if e.End <= e.LSN {
				t.Fatalf("event ends at %s before its start %s", e.End, e.LSN)
			}
		}
	})
}

// FuzzRecordData fuzzes the decoding of a record's data (block headers, main
// data, the optional parts of commit and abort records) on its own, which
// FuzzDecoder seldom reaches behind the CRC.
func FuzzRecordData(f *testing.F) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	f.Add(uint8(rmXact), uint8(xactCommitPrep|xactHasInfo), append([]byte{blockIDDataShort, 16}, append(commitData(now), 0x10, 0, 0, 0, 9, 0, 0, 0)...))
	f.Add(uint8(rmXLog), uint8(xlogRestorePoint), append([]byte{blockIDDataShort, 72}, restorePointData(now, "x")...))
	f.Add(uint8(rmXact), uint8(xactAbort), []byte{0, 0x90, 4, 0, 0x10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, rmid, info uint8, body []byte) {
		decodeEvent(rmid, info, 1, body)
		twoPhaseXID(body, true)
	})
}

// TestVerifiedStopsBeforeWhatCannotBeProven checks Verified on the cases a
// receiver resuming inside a .partial meets after a crash: WAL cut short, a
// torn page (header intact, second half zeroed), a segment opening with the
// end of a record from the previous one (unprovable without the decoder state
// saved with that segment, proven with it), and an uninteresting record
// carried across the boundary.
func TestVerifiedStopsBeforeWhatCannotBeProven(t *testing.T) {
	const segSize = 1 << 20
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	s := newSynth(segSize, 0)
	// Records of known ends: no-ops with 3000 bytes of data each.
	data := make([]byte, 3000)
	for i := range data {
		data[i] = byte(i%251) + 1 // no zeros: a tear is never what was there
	}
	var recEnds []walname.LSN
	for s.pos() < 5*PageSize {
		lsn := s.record(21, 0, 0, data)
		recEnds = append(recEnds, lsn+walname.LSN(recordHeaderSize+5+3000)+walname.LSN(pageHeadersWithin(lsn, recordHeaderSize+5+3000, segSize)))
	}
	lastEndBefore := func(cut walname.LSN) walname.LSN {
		var e walname.LSN
		for _, end := range recEnds {
			if end <= cut {
				e = end
			}
		}
		return e
	}
	feed := func(d *Decoder, b []byte) walname.LSN {
		d.Write(b)
		return d.VerifiedAtEnd()
	}
	for _, cut := range []int{PageSize + 100, 2*PageSize + 4000, 3 * PageSize, len(s.buf)} {
		got := feed(NewDecoder(segSize, 0), s.buf[:cut])
		if want := lastEndBefore(walname.LSN(cut)); got != want {
			t.Errorf("cut at %d: verified %s, want %s (the end of the last whole record)", cut, got, want)
		}
	}
	// A record of zeros cut short: its CRC matches over the zero padding of
	// the last page, yet it is not proven.
	z := newSynth(segSize, 0)
	z.record(21, 0, 0, make([]byte, 100))
	zeros := z.record(21, 0, 0, make([]byte, 3000))
	if got := feed(NewDecoder(segSize, 0), z.buf[:zeros+1000]); got > zeros {
		t.Errorf("a record of zeros cut short: verified %s, beyond its start %s", got, zeros)
	}
	// A torn page: the second half of page 2 zeroed, page 3 intact.
	torn := append([]byte(nil), s.buf...)
	clear(torn[2*PageSize+PageSize/2 : 3*PageSize])
	if got, limit := feed(NewDecoder(segSize, 0), torn), walname.LSN(2*PageSize+PageSize/2); got > limit || got != lastEndBefore(limit) {
		t.Errorf("torn page: verified %s, want the last record end before %s", got, limit)
	}

	// A commit running from segment 0 into segment 1, then an uninteresting
	// record running across the next boundary.
	x := newSynth(segSize, 0)
	x.fillTo(segSize - 100)
	x.record(rmXact, xactCommit, 101, append(commitData(now), make([]byte, 20000)...))
	x.fillTo(2*segSize - 50)
	x.record(21, 0, 0, make([]byte, 5000))
	afterCrossing := x.record(21, 0, 0, make([]byte, 100))
	x.fillTo(2*segSize + 3*PageSize)
	cold := NewDecoder(segSize, segSize)
	if got := feed(cold, x.buf[segSize:2*segSize]); got != segSize {
		t.Errorf("segment 1 opening with a record begun in segment 0, without state: verified %s, want %s (nothing)", got, walname.LSN(segSize))
	}
	first := NewDecoder(segSize, 0)
	first.Write(x.buf[:segSize])
	resumed, err := ResumeDecoder(segSize, first.MarshalState())
	if err != nil {
		t.Fatal(err)
	}
	if got := feed(resumed, x.buf[segSize:2*segSize]); got <= segSize+20000 || got > 2*segSize {
		t.Errorf("segment 1 with the state saved after segment 0: verified %s, want past the commit", got)
	}
	second := NewDecoder(segSize, 0)
	second.Write(x.buf[:2*segSize])
	resumed, err = ResumeDecoder(segSize, second.MarshalState())
	if err != nil {
		t.Fatal(err)
	}
	if got := feed(resumed, x.buf[2*segSize:]); got < afterCrossing {
		t.Errorf("segment 2 with the state saved after segment 1: verified %s, want past %s (the no-op record crossing the boundary checked)", got, afterCrossing)
	}
}
