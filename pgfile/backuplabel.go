package pgfile

import (
	"strings"

	"github.com/walhub/walhub/walname"
)

// BackupLabelStartSegment reads, from the contents of a backup_label file,
// the WAL segment the backup starts in: its line
// "START WAL LOCATION: 0/9000028 (file 000000010000000000000009)", the
// segment redo starts in, which a restore from that backup replays first.
// It reports false when the label has no such line.
func BackupLabelStartSegment(label []byte) (string, bool) {
	for line := range strings.SplitSeq(string(label), "\n") {
		rest, ok := strings.CutPrefix(line, "START WAL LOCATION: ")
		if !ok {
			continue
		}
		_, rest, ok = strings.Cut(rest, "(file ")
		if !ok {
			return "", false
		}
		name, _, ok := strings.Cut(rest, ")")
		if n, err := walname.Parse(name); !ok || err != nil || n.Kind != walname.KindSegment {
			return "", false
		}
		return name, true
	}
	return "", false
}
