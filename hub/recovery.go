package hub

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/restore"
)

// chooseBackup answers which backup a restore to a recovery target starts
// from, decided with the hub's WAL index (restore.Resolver), so a restore
// over HTTP chooses exactly as one on the hub host does.
func (s *Server) chooseBackup(c echo.Context) error {
	srv, err := s.lookupServer(c)
	if err != nil {
		return err
	}
	t, err := restore.TargetFromQuery(c.QueryParams())
	if err != nil {
		return errorf(http.StatusBadRequest, api.CodeBadRequest, "%s", err)
	}
	id := c.QueryParam("backup")
	if id != "" && id != "latest" && !backupIDRE.MatchString(id) {
		return errorf(http.StatusBadRequest, api.CodeBadRequest, "invalid backup id %.80q", id)
	}
	r := restore.Resolver{Repo: s.o.Repo, Server: srv}
	b, err := r.Choose(c.Request().Context(), id, t)
	var u *restore.UnreachableError
	if errors.As(err, &u) {
		return errorf(http.StatusUnprocessableEntity, api.CodeUnreachable, "%s", u.Msg)
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, apiBackup(srv.Name, b))
}

// restorePoints lists the restore points in the WAL the hub holds.
func (s *Server) restorePoints(c echo.Context) error {
	srv, err := s.lookupServer(c)
	if err != nil {
		return err
	}
	rps, err := s.o.Repo.Catalog.RestorePoints(c.Request().Context(), srv.ID, "")
	if err != nil {
		return err
	}
	out := make([]api.RestorePoint, 0, len(rps))
	for _, rp := range rps {
		out = append(out, api.RestorePoint{Name: rp.Name, TimeLine: rp.TimeLine, LSN: rp.LSN, EndLSN: rp.EndLSN, Time: rp.Time})
	}
	return c.JSON(http.StatusOK, out)
}
