// Package repository is the layer between walhub's commands and where their
// bytes live: an object store (storage.ObjectStore: local files, an
// S3-compatible bucket), its local working area (storage.WorkArea) and the
// catalog. It owns the contract between them, once:
//
//   - an object is durable before the catalog row that points at it;
//   - on removal the rows go first, then the objects, so a crash in between
//     leaves an orphan object that Sweep removes, never a row without data;
//   - backup IDs are unique in the repository, across servers and commands;
//   - every object carries what its catalog row needs (segment meta, a
//     backup.info beside each backup's files), so Rebuild can re-create the
//     catalog from the store alone.
//
// Open is the one place that opens a repository from the configuration.
package repository

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/storage"
	"github.com/walhub/walhub/storage/crypt"
	"github.com/walhub/walhub/storage/s3store"
)

// Repository is an open repository: object store, working area, catalog.
type Repository struct {
	Store   storage.ObjectStore
	Work    *storage.WorkArea
	Catalog *catalog.Catalog
}

// ErrNoRepository is returned (wrapped) by Open when the configured
// repository was never created (Init creates it): a mistyped path or an
// unmounted volume is an error, not a fresh empty repository.
var ErrNoRepository = errors.New("no walhub repository there")

// Open opens the existing repository cfg configures: its object store, its
// local working area (cfg.WorkDir) and the catalog kept there. The caller
// closes it.
func Open(ctx context.Context, cfg *config.Config) (*Repository, error) {
	work, err := existingWorkArea(cfg)
	if err != nil {
		return nil, err
	}
	store, err := OpenStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return open(ctx, store, work)
}

// OpenCatalog opens the working area and the catalog cfg configures, and
// not the object store: for readers that need nothing from the store and
// must work while it cannot be reached (the status of a read-only hub,
// which reports its failing refreshes). The caller closes the catalog.
func OpenCatalog(ctx context.Context, cfg *config.Config) (*catalog.Catalog, *storage.WorkArea, error) {
	work, err := existingWorkArea(cfg)
	if err != nil {
		return nil, nil, err
	}
	cat, err := catalog.Open(ctx, work.CatalogPath())
	if err != nil {
		return nil, nil, err
	}
	return cat, work, nil
}

// existingWorkArea returns the working area of cfg, which must hold a catalog.
func existingWorkArea(cfg *config.Config) (*storage.WorkArea, error) {
	work := storage.OpenWorkArea(cfg.WorkDir)
	if err := catalogExists(work); err != nil {
		if cfg.WorkDir != cfg.Repository {
			return nil, fmt.Errorf("repository %s (working area %s): %w", cfg.Repository, cfg.WorkDir, err)
		}
		return nil, fmt.Errorf("repository %s: %w", cfg.Repository, err)
	}
	return work, nil
}

// Init creates the repository cfg configures: its working area and an empty
// catalog (and, for local disk, the repository directory). It returns false
// when the repository exists already, and refuses a working area that holds
// other files but no catalog: not a repository walhub can take over.
func Init(ctx context.Context, cfg *config.Config) (bool, error) {
	work := storage.OpenWorkArea(cfg.WorkDir)
	err := catalogExists(work)
	if err == nil {
		return false, nil
	}
	if !errors.Is(err, ErrNoRepository) {
		return false, err
	}
	if name, err := work.Foreign(); err != nil {
		return false, err
	} else if name != "" {
		return false, fmt.Errorf("working area %s is not empty (%s, ...) but holds no %s: "+
			"not a repository walhub can take over; give an empty or new directory", cfg.WorkDir, name, storage.CatalogFile)
	}
	r, err := OpenForRebuild(ctx, cfg)
	if err != nil {
		return false, err
	}
	// A bucket that holds objects already (its hub was lost) is rebuilt
	// from, not started afresh over; looking also checks that it can be
	// reached with the credentials given. (A local store is the working
	// area's directory, or one of its own: Foreign covered the first. A
	// read-only hub follows a repository another hub writes: its catalog
	// fills at its first refresh.)
	var found string
	errFound := errors.New("found")
	if !r.Store.Features().LocalPaths && !cfg.ReadOnly {
		err := r.Store.List(ctx, "", func(o storage.ObjectInfo) error {
			if _, ok := storage.ParseKey(o.Key); !ok {
				return nil // not a repository object (the encryption marker)
			}
			found = o.Key
			return errFound
		})
		if err != nil && !errors.Is(err, errFound) {
			r.Close()
			os.Remove(work.CatalogPath())
			return false, fmt.Errorf("repository %s: %w", r.Store, err)
		}
	}
	if found != "" {
		r.Close()
		os.Remove(work.CatalogPath())
		return false, fmt.Errorf("repository %s holds a repository already (%s, ...): "+
			"to make its catalog here, walhub repair --rebuild-catalog", r.Store, found)
	}
	if err := r.Close(); err != nil {
		return false, err
	}
	return true, storage.SyncDir(cfg.WorkDir)
}

// OpenForRebuild opens the repository cfg configures like Open, creating a
// new, empty catalog when there is none (Rebuild fills it).
func OpenForRebuild(ctx context.Context, cfg *config.Config) (*Repository, error) {
	store, err := OpenStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	work, err := storage.NewWorkArea(cfg.WorkDir)
	if err != nil {
		return nil, err
	}
	return open(ctx, store, work)
}

// catalogExists tells whether the working area holds a catalog.
func catalogExists(work *storage.WorkArea) error {
	fi, err := os.Stat(work.CatalogPath())
	switch {
	case errors.Is(err, os.ErrNotExist):
		if _, derr := os.Stat(work.Dir()); errors.Is(derr, os.ErrNotExist) {
			return fmt.Errorf("%w: the directory does not exist", ErrNoRepository)
		}
		return fmt.Errorf("%w: the directory has no %s", ErrNoRepository, storage.CatalogFile)
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: %s is not a file", ErrNoRepository, storage.CatalogFile)
	}
	return nil
}

// OpenStore opens the object store of cfg.Repository, encrypting and
// decrypting every object when cfg has an [encryption] section (crypt.Guard
// first makes sure the repository is encrypted, or plain, as configured).
func OpenStore(ctx context.Context, cfg *config.Config) (storage.ObjectStore, error) {
	store, err := openBackend(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var keys *crypt.Keyring
	if e := cfg.Encryption; e != nil {
		if keys, err = crypt.LoadKeyring(e.Key, e.PreviousKeys); err != nil {
			return nil, fmt.Errorf("encryption: %w", err)
		}
	}
	isObject := func(key string) bool { _, ok := storage.ParseKey(key); return ok }
	if err := crypt.Guard(ctx, store, keys, isObject); err != nil {
		return nil, err
	}
	if keys == nil {
		return store, nil
	}
	return crypt.New(store, keys), nil
}

// openBackend opens where the objects are kept. Each kind of store is one
// case here.
func openBackend(ctx context.Context, cfg *config.Config) (storage.ObjectStore, error) {
	switch {
	case cfg.IsS3():
		c := cfg.S3
		return s3store.New(s3store.Config{
			Bucket:                c.Bucket,
			Prefix:                c.Prefix,
			Endpoint:              c.Endpoint,
			Region:                c.Region,
			PathStyle:             c.ForcePathStyle,
			AccessKeyID:           string(c.AccessKeyID),
			SecretAccessKey:       string(c.SecretAccessKey),
			CAFile:                c.CAFile,
			PartSize:              int64(c.PartSizeMB) << 20,
			Concurrency:           c.UploadConcurrency,
			MaxAttempts:           c.MaxAttempts,
			StallTimeout:          c.StallTimeout.Duration,
			ResponseHeaderTimeout: c.ResponseTimeout.Duration,
			ReadOnly:              cfg.ReadOnly,
		})
	case cfg.ReadOnly:
		return storage.NewLocalStoreReadOnly(cfg.Repository), nil
	default:
		return storage.NewLocalStore(cfg.Repository)
	}
}

// OpenLocal opens a repository on local disk whose working area is the
// repository directory itself (tests, tools).
func OpenLocal(ctx context.Context, dir string) (*Repository, error) {
	store, err := storage.NewLocalStore(dir)
	if err != nil {
		return nil, err
	}
	work, err := storage.NewWorkArea(dir)
	if err != nil {
		return nil, err
	}
	return open(ctx, store, work)
}

// New returns a repository over an already open store, working area and
// catalog (tests that inject faults into the store).
func New(store storage.ObjectStore, work *storage.WorkArea, cat *catalog.Catalog) *Repository {
	return &Repository{Store: store, Work: work, Catalog: cat}
}

func open(ctx context.Context, store storage.ObjectStore, work *storage.WorkArea) (*Repository, error) {
	cat, err := catalog.Open(ctx, work.CatalogPath())
	if err != nil {
		return nil, err
	}
	return &Repository{Store: store, Work: work, Catalog: cat}, nil
}

// KeyID is the ID of the key new objects are encrypted with, "" when the
// repository is not encrypted: what catalog rows record beside each object.
func (r *Repository) KeyID() string { return crypt.CurrentKeyID(r.Store) }

// statKey is Stat that also tells the key an object is encrypted with ("" in
// a plain repository), in one request; an object under a key that is not
// configured is a *crypt.KeyError.
func (r *Repository) statKey(ctx context.Context, key string) (storage.ObjectInfo, string, error) {
	cs, ok := r.Store.(*crypt.Store)
	if !ok {
		info, err := r.Store.Stat(ctx, key)
		return info, "", err
	}
	info, id, err := cs.StatKey(ctx, key)
	if err == nil && !cs.Keys().Has(id) {
		err = &crypt.KeyError{Key: key, KeyID: id, Configured: cs.Keys().IDs()}
	}
	return info, id, err
}

// Close closes the catalog.
func (r *Repository) Close() error { return r.Catalog.Close() }

// String names the repository for messages: its store.
func (r *Repository) String() string { return r.Store.String() }

// removeAll removes the objects below prefix, and what dead writers left
// there (see storage.TempRemover): call it only where no writer is active.
func (r *Repository) removeAll(ctx context.Context, prefix string) error {
	if t, ok := r.Store.(storage.TempRemover); ok {
		if err := t.RemoveTemp(ctx, prefix); err != nil {
			return err
		}
	}
	var keys []string
	if err := r.Store.List(ctx, prefix, func(o storage.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		return err
	}
	var errs []error
	for _, k := range keys {
		if err := r.Store.Remove(ctx, k); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ServerByName returns the catalog row of server, an error wrapping
// catalog.ErrNotFound when nothing was ever stored for it.
func (r *Repository) ServerByName(ctx context.Context, server string) (catalog.Server, error) {
	srv, err := r.Catalog.ServerByName(ctx, server)
	if err != nil {
		return catalog.Server{}, fmt.Errorf("server %s: %w", server, err)
	}
	return srv, nil
}
