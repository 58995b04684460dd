package walname

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// HistoryEntry is one line of a timeline history file: timeline TimeLine ended
// at SwitchLSN (the first LSN of the next timeline).
type HistoryEntry struct {
	TimeLine  TimeLine
	SwitchLSN LSN
	Reason    string
}

// ParseHistory parses the content of a NNNNNNNN.history file. Blank lines and
// lines starting with '#' are skipped, as PostgreSQL does.
func ParseHistory(content []byte) ([]HistoryEntry, error) {
	var out []HistoryEntry
	sc := bufio.NewScanner(bytes.NewReader(content))
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.SplitN(text, "\t", 3)
		if len(fields) < 2 {
			fields = strings.Fields(text)
		}
		if len(fields) < 2 {
			return nil, fmt.Errorf("history line %d: want timeline and switch point, got %q", line, text)
		}
		tli, err := strconv.ParseUint(strings.TrimSpace(fields[0]), 10, 32)
		if err != nil || tli == 0 {
			return nil, fmt.Errorf("history line %d: invalid timeline %q", line, fields[0])
		}
		lsn, err := ParseLSN(strings.TrimSpace(fields[1]))
		if err != nil {
			return nil, fmt.Errorf("history line %d: %w", line, err)
		}
		e := HistoryEntry{TimeLine: TimeLine(tli), SwitchLSN: lsn}
		if len(fields) == 3 {
			e.Reason = strings.TrimSpace(fields[2])
		}
		if n := len(out); n > 0 && (e.TimeLine <= out[n-1].TimeLine || e.SwitchLSN < out[n-1].SwitchLSN) {
			return nil, fmt.Errorf("history line %d: timelines and switch points must increase", line)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	return out, nil
}

// TimeLineOf returns the timeline that held lsn, given the history of timeline
// current (the entries of current's history file).
func TimeLineOf(history []HistoryEntry, current TimeLine, lsn LSN) TimeLine {
	for _, e := range history {
		if lsn < e.SwitchLSN {
			return e.TimeLine
		}
	}
	return current
}
