package restore

import (
	"testing"

	"github.com/walhub/walhub/hub/api"
)

// TestFromAPIKeepsEveryFileField: a backup read from a hub describes its
// files as the hub's catalog does, where each archive was compressed
// included.
func TestFromAPIKeepsEveryFileField(t *testing.T) {
	in := api.BackupFile{Name: "16384.tar.zst", Tablespace: 16384, Location: "/srv/ts", Size: 1 << 20, StoredSize: 1 << 16,
		Compression: "zstd", CompressedOn: "server", SHA256Stored: "ab"}
	got := fromAPI(api.Backup{ID: "20261203T120000Z", Files: []api.BackupFile{in}}).Files
	if len(got) != 1 {
		t.Fatalf("%d files, want 1", len(got))
	}
	f := got[0]
	if f.Name != in.Name || f.Tablespace != in.Tablespace || f.Location != in.Location || f.Size != in.Size ||
		f.StoredSize != in.StoredSize || f.Compression != in.Compression || f.CompressedOn != in.CompressedOn ||
		f.SHA256Stored != in.SHA256Stored {
		t.Errorf("fromAPI: %+v, from %+v", f, in)
	}
}
