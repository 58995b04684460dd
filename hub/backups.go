package hub

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/walhub/walhub/catalog"
	"github.com/walhub/walhub/hub/api"
)

var backupIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func apiBackup(server string, b catalog.Backup) api.Backup {
	out := api.Backup{ID: b.ID, Server: server, Kind: b.Kind, State: b.State, Reason: b.Reason, Label: b.Label,
		StartLSN: b.StartLSN, StartTLI: b.StartTLI, StopLSN: b.StopLSN, StopTLI: b.StopTLI,
		StartedAt: b.StartedAt, FinishedAt: b.FinishedAt, OriginalSize: b.OriginalSize, StoredSize: b.StoredSize,
		Compression: b.Compression, Files: []api.BackupFile{}, BackupLabel: b.BackupLabel, TablespaceMap: b.TablespaceMap}
	for _, f := range b.Files {
		out.Files = append(out.Files, api.BackupFile{Name: f.Name, Tablespace: f.Tablespace, Location: f.Location,
			Size: f.Size, StoredSize: f.StoredSize, Compression: f.Compression, CompressedOn: f.CompressedOn,
			SHA256Stored: f.SHA256Stored})
	}
	return out
}

// listBackups lists a server's backups, oldest first.
func (s *Server) listBackups(c echo.Context) error {
	srv, err := s.lookupServer(c)
	if err != nil {
		return err
	}
	bs, err := s.o.Repo.Catalog.Backups(c.Request().Context(), srv.ID)
	if err != nil {
		return err
	}
	out := make([]api.Backup, 0, len(bs))
	for _, b := range bs {
		out = append(out, apiBackup(srv.Name, b))
	}
	return c.JSON(http.StatusOK, out)
}

// lookupBackup resolves :id to a backup of the server.
func (s *Server) lookupBackup(c echo.Context, srv catalog.Server) (catalog.Backup, error) {
	id, err := param(c, "id")
	if err != nil {
		return catalog.Backup{}, err
	}
	if !backupIDRE.MatchString(id) {
		return catalog.Backup{}, errorf(http.StatusBadRequest, api.CodeBadRequest, "invalid backup id %.80q", id)
	}
	b, err := s.o.Repo.Catalog.Backup(c.Request().Context(), id)
	if errors.Is(err, catalog.ErrNotFound) || (err == nil && b.ServerID != srv.ID) {
		return catalog.Backup{}, errorf(http.StatusNotFound, api.CodeNotFound, "server %s has no backup %s", srv.Name, id)
	}
	return b, err
}

// getBackup describes one backup.
func (s *Server) getBackup(c echo.Context) error {
	srv, err := s.lookupServer(c)
	if err != nil {
		return err
	}
	b, err := s.lookupBackup(c, srv)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, apiBackup(srv.Name, b))
}

// getBackupFile sends one stored file of a backup as stored (compressed). Only
// names the catalog lists for that backup are served.
func (s *Server) getBackupFile(c echo.Context) error {
	srv, err := s.lookupServer(c)
	if err != nil {
		return err
	}
	b, err := s.lookupBackup(c, srv)
	if err != nil {
		return err
	}
	name, err := param(c, "file")
	if err != nil {
		return err
	}
	var file *catalog.BackupFile
	for i := range b.Files {
		if b.Files[i].Name == name {
			file = &b.Files[i]
		}
	}
	if file == nil || !backupIDRE.MatchString(name) {
		return errorf(http.StatusNotFound, api.CodeNotFound, "backup %s has no file %.80q", b.ID, name)
	}
	f, err := s.o.Repo.OpenBackupFile(c.Request().Context(), b, file.Name)
	if err != nil {
		return fmt.Errorf("backup %s file %s: %w", b.ID, file.Name, err)
	}
	defer f.Close()
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, echo.MIMEOctetStream)
	h.Set(echo.HeaderContentLength, strconv.FormatInt(f.Size(), 10))
	h.Set(api.HeaderSize, strconv.FormatInt(file.Size, 10))
	if file.SHA256Stored != "" {
		h.Set(api.HeaderSHA256Stored, file.SHA256Stored)
	}
	return s.sendBody(c, f, b.ID+"/"+file.Name)
}

// status answers with what the Status function says about the server.
func (s *Server) status(c echo.Context) error {
	name := c.Param("server")
	if !serverNameRE.MatchString(name) {
		return errorf(http.StatusNotFound, api.CodeUnknownServer, "unknown server %.80q", name)
	}
	if s.o.Status == nil {
		return errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "status is not available from this hub")
	}
	if _, err := s.config().Server(name); err != nil {
		if _, lerr := s.lookupServer(c); lerr != nil {
			return lerr
		}
	}
	st, err := s.o.Status(c.Request().Context(), name)
	if err != nil {
		return err
	}
	body, err := jsonWithoutHostPaths(st)
	if err != nil {
		return fmt.Errorf("status of %s: %w", name, err)
	}
	return c.JSONBlob(http.StatusOK, body)
}
