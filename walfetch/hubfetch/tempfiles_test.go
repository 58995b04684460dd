package hubfetch

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// TestTempFilesRemoveAllLeavesNoFileBehind: a signal handler's RemoveAll,
// whenever it comes while downloads create their temporary files, must leave
// none behind. A file created just before RemoveAll but registered just
// after it was left in pg_wal (a fresh-clone CI run:
// TestSignalRemovesTemporaryFileAndExitsOne, ".walfetch-….tmp" left after
// SIGTERM).
func TestTempFilesRemoveAllLeavesNoFileBehind(t *testing.T) {
	for i := range 300 {
		dir := t.TempDir()
		reg := NewTempFiles()
		var wg sync.WaitGroup
		var exited atomic.Bool // the process has exited, as the handler's os.Exit does after RemoveAll
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !exited.Load() {
				f, err := reg.create(dir)
				if err != nil {
					return // RemoveAll has run: no new file
				}
				f.Close()
			}
		}()
		for range i % 7 {
			os.ReadDir(dir) // let the creator run a little, a different while each time
		}
		reg.RemoveAll()
		exited.Store(true)
		wg.Wait()
		if left, _ := filepath.Glob(filepath.Join(dir, ".walfetch-*.tmp")); len(left) > 0 {
			t.Fatalf("round %d: RemoveAll left %v", i, left)
		}
	}
}
