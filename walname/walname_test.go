package walname

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestSegmentNameRoundTrip(t *testing.T) {
	tests := []struct {
		segSize uint64
		tli     TimeLine
		lsn     LSN
		want    string
	}{
		{16 << 20, 1, 0x0, "000000010000000000000000"},
		{16 << 20, 1, 0x1_0000_0000, "000000010000000100000000"},
		{16 << 20, 2, 0x16_B374_D848, "0000000200000016000000B3"},
		{1 << 20, 1, 0x3_FFF0_0000, "000000010000000300000FFF"},
		{1 << 30, 3, 0x2_C000_0000, "000000030000000200000003"},
		{64 << 20, 0xA, 0xFFFF_FFFF_FFFF_FFFF, "0000000AFFFFFFFF0000003F"},
	}
	for _, tt := range tests {
		n := SegmentOf(tt.lsn, tt.segSize)
		got := SegmentName(tt.tli, n, tt.segSize)
		if got != tt.want {
			t.Errorf("SegmentName(%d, %s, %d) = %s, want %s", tt.tli, tt.lsn, tt.segSize, got, tt.want)
			continue
		}
		tli, back, err := ParseSegment(got, tt.segSize)
		if err != nil || tli != tt.tli || back != n {
			t.Errorf("ParseSegment(%s) = %d, %d, %v; want %d, %d", got, tli, back, err, tt.tli, n)
		}
		if start := SegmentStart(n, tt.segSize); start != AlignDown(tt.lsn, tt.segSize) || start+LSN(SegmentOffset(tt.lsn, tt.segSize)) != tt.lsn {
			t.Errorf("SegmentStart/offset inconsistent for %s", tt.lsn)
		}
	}
}

func TestNextSegmentCrossesLog(t *testing.T) {
	for _, size := range []uint64{1 << 20, 16 << 20, 1 << 30} {
		per := SegNo(0x100000000 / size)
		if got, want := SegmentName(1, per-1, size)[8:16], "00000000"; got != want {
			t.Errorf("size %d: last of log 0 has log %s", size, got)
		}
		if got, want := SegmentName(1, per, size)[8:], "0000000100000000"; got != want {
			t.Errorf("size %d: next after log 0 = %s, want %s", size, got, want)
		}
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		kind Kind
		ok   bool
	}{
		{"000000010000000000000001", KindSegment, true},
		{"000000010000000000000001.partial", KindPartial, true},
		{"00000002.history", KindHistory, true},
		{"000000010000000000000002.00000028.backup", KindBackup, true},
		{"000000000000000000000001", 0, false},        // timeline 0
		{"00000000.history", 0, false},                // timeline 0
		{"00000001000000000000000a", 0, false},        // lower case
		{"00000001000000000000000", 0, false},         // short
		{"0000000100000000000000011", 0, false},       // long
		{"../../../../etc/passwd", 0, false},          // path
		{"/00000001000000000000001", 0, false},        // absolute
		{"000000010000000000000001.zst", 0, false},    // unknown suffix
		{"0000000G0000000000000001", 0, false},        // non-hex
		{"2.history", 0, false},                       // short history
		{"000000010000000000000002.backup", 0, false}, // backup without offset
		{"", 0, false},
		{"000000010000000000000001.partial.partial", 0, false},
	}
	for _, tt := range tests {
		n, err := Parse(tt.in)
		if tt.ok != (err == nil) {
			t.Errorf("Parse(%q) err = %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if !tt.ok {
			if !errors.Is(err, ErrInvalidName) {
				t.Errorf("Parse(%q) error %v does not wrap ErrInvalidName", tt.in, err)
			}
			continue
		}
		if n.Kind != tt.kind || n.String() != tt.in {
			t.Errorf("Parse(%q) = %+v (%s), want kind %s", tt.in, n, n, tt.kind)
		}
	}
}

func TestSegNoOutOfRangeForSize(t *testing.T) {
	// With 1 GiB segments a log holds 4 segments: 00000004 cannot exist.
	if _, _, err := ParseSegment("000000010000000000000004", 1<<30); err == nil {
		t.Fatal("want an error for segment 4 of a log with 1 GiB segments")
	}
	if _, _, err := ParseSegment("000000010000000000000003", 1<<30); err != nil {
		t.Fatal(err)
	}
}

func TestValidSegmentSize(t *testing.T) {
	for _, tt := range []struct {
		size uint64
		ok   bool
	}{{1 << 20, true}, {16 << 20, true}, {1 << 30, true}, {1 << 19, false}, {1 << 31, false}, {3 << 20, false}, {0, false}} {
		if err := ValidSegmentSize(tt.size); (err == nil) != tt.ok {
			t.Errorf("ValidSegmentSize(%d) = %v, want ok=%v", tt.size, err, tt.ok)
		}
	}
}

func TestParseLSN(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want LSN
		ok   bool
	}{
		{"0/0", 0, true}, {"16/B374D848", 0x16B374D848, true}, {"FFFFFFFF/FFFFFFFF", ^LSN(0), true},
		{"1", 0, false}, {"/1", 0, false}, {"1/", 0, false}, {"G/1", 0, false}, {"123456789/0", 0, false},
	} {
		got, err := ParseLSN(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("ParseLSN(%q) = %v, %v; want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if tt.ok {
			b, _ := json.Marshal(got)
			var back LSN
			if err := json.Unmarshal(b, &back); err != nil || back != got || string(b) != `"`+tt.in+`"` {
				t.Errorf("JSON of %s = %s, back %v, %v", tt.in, b, back, err)
			}
		}
		if tt.ok && got.String() != tt.in {
			t.Errorf("LSN(%q).String() = %s", tt.in, got)
		}
	}
}

func TestParseHistory(t *testing.T) {
	h, err := ParseHistory([]byte("1\t0/3000000\tno recovery target specified\n\n2\t0/5000158\tat restore point \"x\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].TimeLine != 1 || h[0].SwitchLSN != 0x3000000 || h[1].TimeLine != 2 || h[1].SwitchLSN != 0x5000158 {
		t.Fatalf("got %+v", h)
	}
	for lsn, want := range map[LSN]TimeLine{0x2000000: 1, 0x3000000: 2, 0x5000157: 2, 0x5000158: 3} {
		if got := TimeLineOf(h, 3, lsn); got != want {
			t.Errorf("TimeLineOf(%s) = %d, want %d", lsn, got, want)
		}
	}
	if _, err := ParseHistory([]byte("2\t0/5\n1\t0/6\n")); err == nil {
		t.Error("want an error for decreasing timelines")
	}
	if _, err := ParseHistory([]byte("x\t0/5\n")); err == nil {
		t.Error("want an error for a bad timeline")
	}
}

// FuzzParse checks that Parse never panics, that whatever it accepts formats
// back to the same name, and that an accepted name never holds a path element.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"000000010000000000000001", "000000010000000000000001.partial", "00000002.history",
		"000000010000000000000002.00000028.backup", "../x", "/etc/passwd", "", "00000001000000000000000a",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			return
		}
		if n.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, n.String())
		}
		for _, c := range s {
			if c == '/' || c == '\\' || c == 0 {
				t.Fatalf("accepted %q holding a path character", s)
			}
		}
		if n.Kind != KindHistory {
			for _, size := range []uint64{1 << 20, 16 << 20, 1 << 30} {
				if no, err := n.SegNo(size); err == nil {
					if got := SegmentName(n.TimeLine, no, size); got != s[:24] {
						t.Fatalf("size %d: %q -> %d -> %q", size, s, no, got)
					}
				}
			}
		}
	})
}
