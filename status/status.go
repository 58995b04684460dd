// Package status builds the status document of one server, what `walhub
// status` prints, `walhub check` judges and the hub serves at
// GET /v1/servers/{server}/status. It gathers the configuration, the catalog
// (WAL held, gaps, backups), the receiver's state file (never trusted alone:
// a dead process or a stale file means "not running"), the backup/expire lock,
// and what PostgreSQL itself says over a normal connection (replication
// clients, the slot, the current WAL position). A server that cannot be reached
// is reported as such; the rest of the document still shows.
//
// The JSON form is documented in docs/status.md and is stable: fields are added,
// never renamed or removed, within one Schema value.
package status

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/config"
	"github.com/walhub/walhub/lock"
	"github.com/walhub/walhub/storage"
)

// Schema names the version of the document's layout.
const Schema = "walhub.status/1"

// ErrUnknownServer is returned (wrapped) for a server the configuration does not name.
var ErrUnknownServer = errors.New("unknown server")

// Document is the status of one server.
type Document struct {
	Schema      string    `json:"schema"`
	Server      string    `json:"server"`
	GeneratedAt time.Time `json:"generated_at"`
	// Slot and ApplicationName are what the hub's receiver uses on the server.
	SlotName        string   `json:"slot_name"`
	ApplicationName string   `json:"application_name"`
	Postgres        Postgres `json:"postgres"`
	Receiver        Receiver `json:"receiver"`
	Slot            Slot     `json:"slot"`
	Clients         []Client `json:"clients"`
	WAL             WAL      `json:"wal"`
	Backups         Backups  `json:"backups"`
	// Recoverable is the window a restore can reach; absent when no backup
	// can be restored with the WAL held.
	Recoverable *RecoverableWindow `json:"recoverable,omitempty"`
	Lock        Locks              `json:"lock"`
	Repository  Repository         `json:"repository"`
	// ReadOnly is true on a read-only hub (read_only = true): the server is
	// one its catalog follows from a repository another hub writes, and the
	// hub has no connection to it, so Postgres, Receiver, Slot and Clients
	// say nothing about it (see Refresh instead). Absent on a writing hub.
	ReadOnly bool `json:"read_only,omitempty"`
	// Refresh is how current a read-only hub's catalog is; absent on a
	// writing hub.
	Refresh *Refresh `json:"refresh,omitempty"`
}

// Repository is the file system of the repository's local working area (for a
// repository on local disk, the repository's own).
type Repository struct {
	Path        string  `json:"path"`
	TotalBytes  uint64  `json:"total_bytes"`
	FreeBytes   uint64  `json:"free_bytes"`
	FreePercent float64 `json:"free_percent"`
	Error       string  `json:"error,omitempty"`
}

// Locks says which of backup, expire and snapshot holds the server's lock.
// Each is always present, held or not (as pgBackRest's info has it).
type Locks struct {
	Backup   LockState `json:"backup"`
	Expire   LockState `json:"expire"`
	Snapshot LockState `json:"snapshot"`
	// Other is a holder whose command is none of the three.
	Other *LockState `json:"other,omitempty"`
}

// LockState is one command's hold on the lock.
type LockState struct {
	Held    bool      `json:"held"`
	Command string    `json:"command,omitempty"`
	PID     int       `json:"pid,omitempty"`
	Host    string    `json:"host,omitempty"`
	Since   time.Time `json:"since,omitzero"`
	// Progress is the percentage done; absent when unknown.
	Progress  *float64  `json:"progress,omitempty"`
	Detail    string    `json:"detail,omitempty"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// Running returns the held lock, if any.
func (l Locks) Running() (LockState, bool) {
	for _, s := range []LockState{l.Backup, l.Expire, l.Snapshot} {
		if s.Held {
			return s, true
		}
	}
	if l.Other != nil && l.Other.Held {
		return *l.Other, true
	}
	return LockState{}, false
}

// Source is what Build reads: the configuration, the open catalog and the
// repository's local working area (locks, receiver state, free space).
type Source struct {
	Config  *config.Config
	Catalog *catalog.Catalog
	Work    *storage.WorkArea
	// ConnectTimeout bounds each connection to PostgreSQL (default 5 s).
	ConnectTimeout time.Duration
}

// Provider returns the function the hub calls to serve
// GET /v1/servers/{server}/status: it builds the document of the named server.
// An unconfigured name gives an error wrapping ErrUnknownServer.
func Provider(cfg *config.Config, cat *catalog.Catalog, work *storage.WorkArea) func(ctx context.Context, server string) (any, error) {
	src := Source{Config: cfg, Catalog: cat, Work: work}
	return func(ctx context.Context, server string) (any, error) {
		return src.Build(ctx, server)
	}
}

// Build gathers the status of the named server. It fails only when the
// server is not configured or the catalog cannot be read; PostgreSQL being
// unreachable is part of the document.
func (s Source) Build(ctx context.Context, server string) (*Document, error) {
	if s.Config.ReadOnly {
		return s.buildFollowed(ctx, server)
	}
	srv, err := s.Config.Server(server)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnknownServer, err)
	}
	now := time.Now().UTC()
	doc := &Document{Schema: Schema, Server: srv.Name, GeneratedAt: now, SlotName: srv.Slot,
		ApplicationName: srv.ApplicationName, Clients: []Client{}}

	timeout := s.ConnectTimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	// PostgreSQL is asked while the catalog is read: the slower of the two sets the pace.
	pgDone := make(chan struct{})
	go func() {
		defer close(pgDone)
		queryPostgres(ctx, srv, timeout, doc)
	}()

	catErr := s.fromCatalog(ctx, srv, now, doc)
	doc.Lock = readLock(s.Work, srv.Name)
	doc.Repository = diskSpace(s.Work)
	<-pgDone
	if catErr != nil {
		return nil, catErr
	}
	doc.Receiver = readReceiver(s.Work, srv, now)
	finish(doc)
	return doc, nil
}

// readLock reports the server's lock; a lock that cannot be read is reported as
// held by "unknown" so that nothing is started on top of it by someone reading status.
func readLock(work *storage.WorkArea, server string) Locks {
	locks := Locks{}
	h, held, err := work.ReadLock(server)
	if err != nil {
		h, held = lock.Holder{Command: "unknown", Progress: -1, Detail: err.Error()}, true
	}
	if !held {
		return locks
	}
	st := LockState{Held: true, Command: h.Command, PID: h.PID, Host: h.Host, Since: h.Since.UTC(),
		Detail: h.Detail, UpdatedAt: h.UpdatedAt.UTC()}
	if h.Progress >= 0 {
		p := h.Progress
		st.Progress = &p
	}
	switch h.Command {
	case "backup":
		locks.Backup = st
	case "expire":
		locks.Expire = st
	case "snapshot":
		locks.Snapshot = st
	default:
		locks.Other = &st
	}
	return locks
}

func diskSpace(work *storage.WorkArea) Repository {
	r := Repository{Path: work.Dir()}
	total, free, err := work.FreeSpace()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.TotalBytes, r.FreeBytes = total, free
	if r.TotalBytes > 0 {
		r.FreePercent = float64(r.FreeBytes) * 100 / float64(r.TotalBytes)
	}
	return r
}

// hostname is this host's name, for telling whether a PID can be checked here.
var hostname, _ = os.Hostname()

// finish computes what needs both PostgreSQL's and the hub's view.
func finish(doc *Document) {
	r := &doc.Receiver
	if doc.Postgres.Reachable && doc.Postgres.CurrentLSN != 0 {
		r.ServerLSN = doc.Postgres.CurrentLSN
	}
	if r.State == "absent" {
		return
	}
	if r.ServerLSN > r.FlushedLSN {
		r.LagBytes = int64(r.ServerLSN - r.FlushedLSN)
	}
	for _, c := range doc.Clients {
		if c.Walhub && c.FlushLagSeconds != nil {
			lag := *c.FlushLagSeconds
			r.LagSeconds = &lag
		}
	}
}
