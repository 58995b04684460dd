// Package checksum is the checksum walhub keeps for every stored WAL segment:
// CRC-32C (Castagnoli, hardware-accelerated) of the uncompressed bytes, written
// as "crc32c:%08x". The catalog stores it, the hub sends it, walfetch checks it.
package checksum

import (
	"fmt"
	"hash"
	"hash/crc32"
	"strconv"
	"strings"
)

var table = crc32.MakeTable(crc32.Castagnoli)

// New returns a hash of the kind walhub uses.
func New() hash.Hash32 { return crc32.New(table) }

// Of returns the formatted checksum of b.
func Of(b []byte) string { return Format(crc32.Checksum(b, table)) }

// Update returns sum extended with b: Update(Update(0, a), b) is the
// CRC-32C of a followed by b, for a caller that sees the bytes in pieces.
func Update(sum uint32, b []byte) uint32 { return crc32.Update(sum, table, b) }

// Format formats a CRC-32C value as "crc32c:1a2b3c4d".
func Format(sum uint32) string { return fmt.Sprintf("crc32c:%08x", sum) }

// Parse reads a formatted checksum back.
func Parse(s string) (uint32, error) {
	hexPart, ok := strings.CutPrefix(s, "crc32c:")
	if !ok || len(hexPart) != 8 {
		return 0, fmt.Errorf("invalid checksum %q: want crc32c:<8 hex digits>", s)
	}
	v, err := strconv.ParseUint(hexPart, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid checksum %q: %w", s, err)
	}
	return uint32(v), nil
}
