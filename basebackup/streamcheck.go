package basebackup

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// streamCheck checks a backup against its manifest as it streams in, so that
// no second read pass over the stored archives is needed: each archive's tar
// stream is followed as it arrives and every regular file's size and
// manifest checksum are computed on the way; when the manifest has arrived,
// check compares them with it exactly as Verify does with a stored backup
// (every file of the manifest present with its size and checksum, nothing
// that is not in the manifest).
type streamCheck struct {
	// algorithm is the checksum the manifest was asked for (MANIFEST_CHECKSUMS).
	algorithm string
	files     []streamedFile
	scan      *tarScanner
	prefix    string
}

// streamedFile is one regular file as it streamed in.
type streamedFile struct {
	path     string
	size     int64
	checksum string
}

func newStreamCheck(algorithm string) (*streamCheck, error) {
	algorithm = strings.ToUpper(algorithm)
	if _, err := newManifestHash(algorithm); err != nil {
		return nil, err
	}
	return &streamCheck{algorithm: algorithm}, nil
}

// startArchive begins following a new archive; oid is its tablespace (0 for
// base.tar), whose files the manifest names under pg_tblspc/OID/.
func (c *streamCheck) startArchive(name string, oid uint32) error {
	if err := c.endArchive(); err != nil {
		return err
	}
	c.prefix = ""
	if oid != 0 {
		c.prefix = fmt.Sprintf("pg_tblspc/%d/", oid)
	}
	c.scan = &tarScanner{archive: name, algorithm: c.algorithm, file: func(name string, size int64, checksum string) {
		c.files = append(c.files, streamedFile{path: c.prefix + strings.TrimPrefix(name, "./"), size: size, checksum: checksum})
	}}
	return nil
}

// write follows p, the next bytes of the current archive.
func (c *streamCheck) write(p []byte) error {
	if c.scan == nil {
		return errors.New("archive data before any archive")
	}
	return c.scan.write(p)
}

// endArchive checks that the current archive ended between two entries.
func (c *streamCheck) endArchive() error {
	if c.scan == nil {
		return nil
	}
	s := c.scan
	c.scan = nil
	return s.end()
}

// check compares what streamed in with manifest m. A mismatch is a
// *VerifyError listing every problem.
func (c *streamCheck) check(m *Manifest) (Checked, error) {
	if err := c.endArchive(); err != nil {
		return Checked{}, err
	}
	fc := newFileCheck(m, nil)
	for _, f := range c.files {
		fc.compare(f.path, f.size, c.algorithm, f.checksum)
	}
	return fc.checked, fc.result()
}

// tarScanner follows a tar stream written to it in pieces of any size and
// reports each regular file with its size and checksum. It reads what
// archive/tar reads (the same headers, through archive/tar), without a
// goroutine or a copy: PostgreSQL's tar writer produces plain ustar headers
// only (src/port/tar.c refuses longer names), so a header is one 512-byte
// block; an extension header (PAX, GNU long names, sparse files) is refused.
type tarScanner struct {
	archive   string
	algorithm string
	file      func(name string, size int64, checksum string)

	block  [blockSize]byte
	filled int // bytes of block filled
	// left is the data of the current entry still to come, pad the padding
	// after it.
	left, pad int64
	// cur is the regular file being read (nil for other entries).
	cur *tarFile
	// zeros counts the zero blocks of the end-of-archive marker seen.
	zeros int
	err   error
}

type tarFile struct {
	name string
	size int64
	hash manifestHash
}

const blockSize = 512

func (t *tarScanner) write(p []byte) error {
	if t.err != nil {
		return t.err
	}
	for len(p) > 0 {
		switch {
		case t.zeros == 2:
			// After the end-of-archive marker: archive/tar reads no further.
			return nil
		case t.left > 0:
			n := int64(len(p))
			if n > t.left {
				n = t.left
			}
			if t.cur != nil {
				t.cur.hash.Write(p[:n])
			}
			t.left -= n
			p = p[n:]
			if t.left == 0 {
				t.endEntry()
			}
		case t.pad > 0:
			n := int64(len(p))
			if n > t.pad {
				n = t.pad
			}
			t.pad -= n
			p = p[n:]
		default:
			n := copy(t.block[t.filled:], p)
			t.filled += n
			p = p[n:]
			if t.filled == blockSize {
				t.filled = 0
				if err := t.header(); err != nil {
					t.err = fmt.Errorf("%s: read tar: %w", t.archive, err)
					return t.err
				}
			}
		}
	}
	return nil
}

// header interprets the full block as the next header.
func (t *tarScanner) header() error {
	if t.block == [blockSize]byte{} {
		t.zeros++
		return nil
	}
	if t.zeros > 0 {
		return tar.ErrHeader // a zero block, then a header: as archive/tar says
	}
	switch flag := t.block[156]; flag {
	case tar.TypeXHeader, tar.TypeXGlobalHeader, tar.TypeGNULongName, tar.TypeGNULongLink, tar.TypeGNUSparse:
		return fmt.Errorf("tar extension header (type %q), which PostgreSQL does not write", flag)
	}
	h, err := tar.NewReader(bytes.NewReader(t.block[:])).Next()
	if err != nil {
		return err
	}
	if h.Size < 0 {
		return fmt.Errorf("%s: negative size", h.Name)
	}
	size := h.Size
	switch h.Typeflag {
	case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
		size = 0 // header-only entries, as archive/tar reads them
	}
	t.left, t.pad = size, (blockSize-size%blockSize)%blockSize
	if h.Typeflag == tar.TypeReg {
		hash, _ := newManifestHash(t.algorithm)
		t.cur = &tarFile{name: h.Name, size: size, hash: hash}
	}
	if size == 0 {
		t.endEntry()
	}
	return nil
}

// endEntry reports the regular file whose data is complete.
func (t *tarScanner) endEntry() {
	if t.cur != nil {
		t.file(t.cur.name, t.cur.size, t.cur.hash.Hex())
		t.cur = nil
	}
}

// end checks that the archive ended where archive/tar accepts an end: between
// entries, with or without the end-of-archive marker (PostgreSQL 15 sends
// none; pg_basebackup adds it).
func (t *tarScanner) end() error {
	if t.err != nil {
		return t.err
	}
	if t.zeros == 2 {
		return nil
	}
	if t.filled > 0 || t.left > 0 || t.pad > 0 {
		return fmt.Errorf("%s: read tar: %w", t.archive, errTruncatedArchive(t))
	}
	return nil
}

func errTruncatedArchive(t *tarScanner) error {
	if t.cur != nil {
		return fmt.Errorf("the archive ends inside %s, %d of its %d bytes missing", t.cur.name, t.left, t.cur.size)
	}
	return errors.New("the archive ends inside an entry (unexpected EOF)")
}
