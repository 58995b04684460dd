package hub

import (
	"embed"
	"fmt"
	"io/fs"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/walhub/walhub/hub/api"
)

// ui is the status page: one HTML file, its script and its style sheet, all
// embedded so that the page works on a hub with no way out to the internet.
//
//go:embed ui/index.html ui/app.js ui/app.css
var ui embed.FS

// pageCSP lets the page load only its own script, style and API: a token in
// the page's session storage is worth protecting from injected scripts.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
	"form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// pageRoutes serves the status page at GET / and lists the servers at
// GET /v1/servers. The page itself holds no data: without a token it shows
// only its login form, and everything it shows comes from the read routes
// with the read token the viewer typed (kept in the browser tab's session
// storage, gone when the tab closes).
func (s *Server) pageRoutes() {
	files, err := fs.Sub(ui, "ui")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	static := func(name, contentType string) echo.HandlerFunc {
		return func(c echo.Context) error {
			data, err := fs.ReadFile(files, name)
			if err != nil {
				return err
			}
			h := c.Response().Header()
			h.Set("Content-Security-Policy", pageCSP)
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Referrer-Policy", "no-referrer")
			h.Set("Cache-Control", "no-cache")
			return c.Blob(http.StatusOK, contentType, data)
		}
	}
	s.echo.GET("/", static("index.html", "text/html; charset=utf-8"))
	s.echo.GET("/ui/app.js", static("app.js", "text/javascript; charset=utf-8"))
	s.echo.GET("/ui/app.css", static("app.css", "text/css; charset=utf-8"))
	s.echo.Add(http.MethodGet, api.ServersPath, s.listServers, s.requireToken(false))
}

// listServers names the configured servers; on a read-only hub, those its
// catalog follows from the repository another hub writes.
func (s *Server) listServers(c echo.Context) error {
	out := api.Servers{Servers: []string{}}
	for _, srv := range s.config().Servers {
		out.Servers = append(out.Servers, srv.Name)
	}
	if s.config().ReadOnly {
		followed, err := s.o.Repo.Catalog.Servers(c.Request().Context())
		if err != nil {
			return fmt.Errorf("list the servers the catalog follows: %w", err)
		}
		for _, srv := range followed {
			out.Servers = append(out.Servers, srv.Name)
		}
	}
	return c.JSON(http.StatusOK, out)
}
