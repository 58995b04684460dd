package hub

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/walhub/walhub/hub/api"
	"github.com/walhub/walhub/version"
)

// metrics are the hub's HTTP metrics. Labels take their values from route
// patterns and fixed sets, never from raw paths, so bad names cannot blow up
// the label set.
type metrics struct {
	requests    *prometheus.CounterVec
	bytesServed *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	walRequests *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walhub_hub_requests_total",
			Help: "HTTP requests answered by the hub, by route and status code.",
		}, []string{"route", "code"}),
		bytesServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walhub_hub_response_bytes_total",
			Help: "Bytes of response bodies sent by the hub, by route (compressed bytes when sent compressed).",
		}, []string{"route"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "walhub_hub_request_duration_seconds",
			Help:    "Time to answer a request, by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 30},
		}, []string{"route"}),
		walRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walhub_hub_wal_requests_total",
			Help: "Requests of the WAL routes walfetch uses, by what was asked (segment, partial, history, peek) and " +
				"the outcome: served, not_found (normal: walfetch exits 1, recovery moves on), unknown_server, " +
				"unauthorized, bad_request, error (the hub failed).",
		}, []string{"kind", "result"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.bytesServed, m.duration, m.walRequests, buildInfo()} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// buildInfo is walhub_build_info: 1, with the version, VCS revision and Go
// version the binary was built with (what --version prints).
func buildInfo() prometheus.Collector {
	v := version.Get()
	revision := v.Commit
	if revision == "" {
		revision = "unknown"
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "walhub_build_info",
		Help:        "Always 1; the labels say which walhub this is.",
		ConstLabels: prometheus.Labels{"version": v.Version, "revision": revision, "goversion": v.Go},
	})
	g.Set(1)
	return g
}

// metricsRoute serves the registry at GET /metrics. With hub.metrics_tokens
// set it needs one of them (or a read or admin token); without, it answers
// anyone who can reach the hub: metrics carry positions, sizes and ages,
// never WAL or data.
func (s *Server) metricsRoute() {
	h := echo.WrapHandler(promhttp.HandlerFor(s.o.Registry, promhttp.HandlerOpts{ErrorLog: slogPrinter{s}}))
	s.echo.GET("/metrics", h, func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			hc := s.config().Hub
			if len(hc.MetricsTokens) == 0 {
				return next(c)
			}
			token, _ := strings.CutPrefix(c.Request().Header.Get(echo.HeaderAuthorization), "Bearer ")
			if !tokenIn(token, hc.MetricsTokens) && !tokenIn(token, hc.ReadTokens) && !tokenIn(token, hc.AdminTokens) {
				return errorf(http.StatusUnauthorized, api.CodeUnauthorized, "a metrics token is required (Authorization: Bearer <token>; hub.metrics_tokens)")
			}
			return next(c)
		}
	})
}

// slogPrinter passes promhttp's errors (a collector that failed) to the hub's log.
type slogPrinter struct{ s *Server }

func (p slogPrinter) Println(v ...any) {
	p.s.o.Log.Warn("metrics: " + fmt.Sprint(v...))
}

// observe counts every request by route pattern and status code.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			// Write the error response now, so its status is what we count.
			c.Error(err)
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		status := c.Response().Status
		s.metrics.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
		s.metrics.bytesServed.WithLabelValues(route).Add(float64(c.Response().Size))
		s.metrics.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		if kind := walKind(route, c.Param("name")); kind != "" {
			s.metrics.walRequests.WithLabelValues(kind, walResult(status, err)).Inc()
		}
		s.o.Log.Debug("hub request", "method", c.Request().Method, "path", c.Request().URL.Path,
			"status", status, "bytes", c.Response().Size, "duration", time.Since(start))
		return nil
	}
}

// walKind tells what a request of a WAL route asked for; "" for other routes.
func walKind(route, name string) string {
	switch {
	case route == api.Version+"/servers/:server/wal/:name/peek":
		return "peek"
	case route != api.Version+"/servers/:server/wal/:name":
		return ""
	case strings.HasSuffix(name, ".partial"):
		return "partial"
	case strings.HasSuffix(name, ".history"):
		return "history"
	}
	return "segment"
}

// walResult sorts the answer to a WAL request into the outcomes walfetch
// tells apart.
func walResult(status int, err error) string {
	var ae *apiError
	switch {
	case status < 400:
		return "served"
	case status == http.StatusNotFound && errors.As(err, &ae) && ae.code == api.CodeUnknownServer:
		return "unknown_server"
	case status == http.StatusNotFound:
		return "not_found"
	case status == http.StatusUnauthorized:
		return "unauthorized"
	case status < 500:
		return "bad_request"
	}
	return "error"
}
