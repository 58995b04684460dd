package storage

import (
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// ReadSegment writes the uncompressed bytes of the WAL segment stored at
// rel with the given compression ("zstd" or "none") to w.
func ReadSegment(l Local, rel, compression string, w io.Writer) error {
	f, err := l.Open(rel)
	if err != nil {
		return fmt.Errorf("read segment %s: %w", rel, err)
	}
	defer f.Close()
	var in io.Reader = f
	switch compression {
	case "none":
	case "zstd":
		d, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return fmt.Errorf("read segment %s: %w", rel, err)
		}
		defer d.Close()
		in = d
	default:
		return fmt.Errorf("read segment %s: unknown compression %q", rel, compression)
	}
	if _, err := io.Copy(w, in); err != nil {
		return fmt.Errorf("read segment %s: %w", rel, err)
	}
	return nil
}
