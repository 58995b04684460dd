package hub

import (
	"context"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/snapshot"
)

// Snapshots brackets external file-system snapshots; snapshot.Manager is one.
type Snapshots interface {
	Start(ctx context.Context, server, label string, fast bool) (api.SnapshotStarted, error)
	Stop(ctx context.Context, server string) (api.SnapshotStopped, error)
}

// snapshotStart runs pg_backup_start in a session the daemon keeps (admin).
func (s *Server) snapshotStart(c echo.Context) error {
	name, err := s.snapshotServer(c)
	if err != nil {
		return err
	}
	var req api.SnapshotStart
	if err := c.Bind(&req); err != nil {
		return errorf(http.StatusBadRequest, api.CodeBadRequest, "body: want JSON {\"label\": ..., \"fast\": true|false}")
	}
	if len(req.Label) > 200 {
		return errorf(http.StatusBadRequest, api.CodeBadRequest, "label longer than 200 characters")
	}
	started, err := s.o.Snapshots.Start(c.Request().Context(), name, req.Label, req.Fast)
	if err != nil {
		return snapshotError(err)
	}
	return c.JSON(http.StatusOK, started)
}

// snapshotStop runs pg_backup_stop and answers with backup_label (admin).
func (s *Server) snapshotStop(c echo.Context) error {
	name, err := s.snapshotServer(c)
	if err != nil {
		return err
	}
	stopped, err := s.o.Snapshots.Stop(c.Request().Context(), name)
	if err != nil {
		return snapshotError(err)
	}
	return c.JSON(http.StatusOK, stopped)
}

func (s *Server) snapshotServer(c echo.Context) (string, error) {
	if s.o.Snapshots == nil {
		return "", errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "snapshots are not available from this hub")
	}
	name := c.Param("server")
	if _, err := s.config().Server(name); err != nil {
		return "", errorf(http.StatusNotFound, api.CodeUnknownServer, "unknown server %.80q", name)
	}
	return name, nil
}

// snapshotError says why a snapshot action failed, in words the operator can act on.
func snapshotError(err error) error {
	switch {
	case errors.Is(err, snapshot.ErrBusy), errors.Is(err, snapshot.ErrNotRunning):
		return errorf(http.StatusConflict, api.CodeConflict, "%s", err)
	}
	return errorf(http.StatusBadGateway, api.CodeFailed, "%s", err)
}
