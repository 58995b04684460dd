package storage

import (
	"testing"

	"github.com/walhub/walhub/walname"
)

// Every key the layout makes parses back to its kind; what the working area
// keeps beside a local repository's objects is no key.
func TestParseKey(t *testing.T) {
	seg := "000000010000000200000003"
	tests := []struct {
		key  string
		want Key
		ok   bool
	}{
		{SegmentPath("main", seg, "zstd"), Key{Kind: KeySegment, Server: "main", Name: seg, Compression: "zstd"}, true},
		{SegmentPath("main", seg, "none"), Key{Kind: KeySegment, Server: "main", Name: seg, Compression: "none"}, true},
		{HistoryPath("main", 2), Key{Kind: KeyHistory, Server: "main", Name: "00000002.history"}, true},
		{BackupFilePath("main", "20261203T101500", "base.tar.zst"),
			Key{Kind: KeyBackupFile, Server: "main", BackupID: "20261203T101500", Name: "base.tar.zst"}, true},
		{GapPath("main", 1, 0x2000000, 0x5000000),
			Key{Kind: KeyGap, Server: "main", Name: "00000001-0000000002000000-0000000005000000.json"}, true},
		{PartialPath("main", seg), Key{}, false},
		{SparePath("main", 1), Key{}, false},
		{ReceiverStatePath("main"), Key{}, false},
		{"main/gaps/.00000001-0000000002000000-0000000005000000.json.tmp-123", Key{}, false},
		{"main/gaps/notes.txt", Key{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseKey(tt.key)
		if ok != tt.ok || got != tt.want {
			t.Errorf("ParseKey(%q) = %+v, %v; want %+v, %v", tt.key, got, ok, tt.want, tt.ok)
		}
	}
	if got := GapPath("main", walname.TimeLine(0x1A), 0x1_02000000, 0x1_02000100); got != "main/gaps/0000001A-0000000102000000-0000000102000100.json" {
		t.Errorf("GapPath = %s", got)
	}
}
