package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/walhub/walhub/basebackup"
	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/hub/client"
	"github.com/walhub/walhub/repository"
)

// Source is where a restore reads backups from: the local repository on the
// hub host, or a hub over HTTP from any other host.
type Source interface {
	// Backups lists the server's backups.
	Backups(ctx context.Context) ([]catalog.Backup, error)
	// Choose picks the backup for a recovery target (see Resolver.Choose):
	// id names one ("" or "latest" for the newest that reaches t).
	Choose(ctx context.Context, id string, t Target) (catalog.Backup, error)
	// Opener opens the stored files of backup b.
	Opener(b catalog.Backup) basebackup.Opener
	// String says where the backups come from, for messages.
	String() string
}

// Local reads from the repository this host opens (its catalog and store).
type Local struct {
	Repo   *repository.Repository
	Server string
}

// Backups implements Source.
func (l Local) Backups(ctx context.Context) ([]catalog.Backup, error) {
	srv, err := l.Repo.Catalog.ServerByName(ctx, l.Server)
	if errors.Is(err, catalog.ErrNotFound) {
		return nil, fmt.Errorf("the repository %s has nothing for server %s", l.Repo, l.Server)
	}
	if err != nil {
		return nil, err
	}
	return l.Repo.Catalog.Backups(ctx, srv.ID)
}

// Choose implements Source.
func (l Local) Choose(ctx context.Context, id string, t Target) (catalog.Backup, error) {
	srv, err := l.Repo.Catalog.ServerByName(ctx, l.Server)
	if errors.Is(err, catalog.ErrNotFound) {
		return catalog.Backup{}, fmt.Errorf("the repository %s has nothing for server %s", l.Repo, l.Server)
	}
	if err != nil {
		return catalog.Backup{}, err
	}
	r := Resolver{Repo: l.Repo, Server: srv}
	return r.Choose(ctx, id, t)
}

// Opener implements Source.
func (l Local) Opener(b catalog.Backup) basebackup.Opener { return basebackup.RepoOpener(l.Repo, b) }

func (l Local) String() string { return "repository " + l.Repo.String() }

// Remote reads from a hub over HTTP.
type Remote struct {
	Client *client.Client
}

// Backups implements Source.
func (r Remote) Backups(ctx context.Context) ([]catalog.Backup, error) {
	list, err := r.Client.Backups(ctx)
	if err != nil {
		return nil, fmt.Errorf("list backups from %s: %w", r.Client.URL(), err)
	}
	out := make([]catalog.Backup, len(list))
	for i, b := range list {
		out[i] = fromAPI(b)
	}
	return out, nil
}

// Choose implements Source: the hub decides, with its WAL index.
func (r Remote) Choose(ctx context.Context, id string, t Target) (catalog.Backup, error) {
	b, err := r.Client.ChooseBackup(ctx, id, t.Query())
	if err != nil {
		return catalog.Backup{}, fmt.Errorf("choose a backup on %s: %w", r.Client.URL(), err)
	}
	return fromAPI(b), nil
}

// Opener implements Source: each file is downloaded through a pipe as it is
// unpacked, so nothing is staged on disk.
func (r Remote) Opener(b catalog.Backup) basebackup.Opener {
	return func(ctx context.Context, name string) (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() {
			_, err := r.Client.DownloadBackupFile(ctx, b.ID, name, pw)
			pw.CloseWithError(err)
		}()
		return pr, nil
	}
}

func (r Remote) String() string { return "hub " + r.Client.URL() }

// fromAPI maps the hub's wire form of a backup to the catalog's.
func fromAPI(b api.Backup) catalog.Backup {
	files := make([]catalog.BackupFile, len(b.Files))
	for i, f := range b.Files {
		files[i] = catalog.BackupFile{Name: f.Name, Tablespace: f.Tablespace, Location: f.Location, Size: f.Size,
			StoredSize: f.StoredSize, Compression: f.Compression, CompressedOn: f.CompressedOn, SHA256Stored: f.SHA256Stored}
	}
	return catalog.Backup{ID: b.ID, Kind: b.Kind, State: b.State, Reason: b.Reason, Label: b.Label,
		StartLSN: b.StartLSN, StartTLI: b.StartTLI, StopLSN: b.StopLSN, StopTLI: b.StopTLI, StartedAt: b.StartedAt,
		FinishedAt: b.FinishedAt, OriginalSize: b.OriginalSize, StoredSize: b.StoredSize, Compression: b.Compression,
		Files: files, BackupLabel: b.BackupLabel, TablespaceMap: b.TablespaceMap}
}

// checkDeltaTarget fails unless dir is an existing directory that no
// PostgreSQL server runs on.
func checkDeltaTarget(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("--delta restores into an existing data directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("--delta: %s is not a directory", dir)
	}
	return checkNoPostmaster(dir)
}

// checkNoPostmaster fails when dir/postmaster.pid names a live PostgreSQL
// process. A stale file (the process is gone) is no obstacle: a delta restore
// removes it.
func checkNoPostmaster(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s/postmaster.pid: %w", dir, err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return nil
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return nil
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err == nil && !strings.Contains(string(comm), "postgres") && !strings.Contains(string(comm), "postmaster") {
		return nil // the number was reused by another program
	}
	return fmt.Errorf("a PostgreSQL server (pid %d) runs on %s: stop it before a delta restore", pid, dir)
}

// checkEmpty fails unless dir is missing or an empty directory.
func checkEmpty(what, dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, dir, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("%s %s is not empty: restore only writes into an empty or missing directory", what, dir)
	}
	return nil
}
