package hub

import (
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the hub's HTTP metrics.
type metrics struct {
	requests    *prometheus.CounterVec
	bytesServed *prometheus.CounterVec
	duration    *prometheus.HistogramVec
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walhub_hub_requests_total",
			Help: "HTTP requests answered by the hub, by route and status code.",
		}, []string{"route", "code"}),
		bytesServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "walhub_hub_bytes_served_total",
			Help: "Bytes of response bodies sent by the hub, by route (compressed bytes when sent compressed).",
		}, []string{"route"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "walhub_hub_request_duration_seconds",
			Help:    "Time to answer a request, by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"route"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.bytesServed, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observe counts every request by route pattern (never by raw path, so bad
// names cannot blow up the label set) and status code.
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
		s.metrics.requests.WithLabelValues(route, strconv.Itoa(c.Response().Status)).Inc()
		s.metrics.bytesServed.WithLabelValues(route).Add(float64(c.Response().Size))
		s.metrics.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		s.o.Log.Debug("hub request", "method", c.Request().Method, "path", c.Request().URL.Path,
			"status", c.Response().Status, "bytes", c.Response().Size, "duration", time.Since(start))
		return nil
	}
}
