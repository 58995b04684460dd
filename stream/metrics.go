package stream

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the receivers' Prometheus metrics, labelled by server.
type Metrics struct {
	segments      *prometheus.CounterVec
	bytes         *prometheus.CounterVec
	receivedLSN   *prometheus.GaugeVec
	flushedLSN    *prometheus.GaugeVec
	serverLSN     *prometheus.GaugeVec
	lastSegmentAt *prometheus.GaugeVec
	connected     *prometheus.GaugeVec
}

// NewMetrics creates the receiver metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	label := []string{"server"}
	m := &Metrics{
		segments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "walhub_segments_received_total",
			Help: "WAL segments received and stored."}, label),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "walhub_wal_received_bytes_total",
			Help: "Bytes of WAL received."}, label),
		receivedLSN: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "walhub_received_lsn_bytes",
			Help: "End of the WAL received (written to the .partial), as a byte position."}, label),
		flushedLSN: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "walhub_flushed_lsn_bytes",
			Help: "End of the WAL fsynced and reported to the server as flushed, as a byte position."}, label),
		serverLSN: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "walhub_server_lsn_bytes",
			Help: "The server's WAL end as of its last message; minus walhub_flushed_lsn_bytes it is the lag."}, label),
		lastSegmentAt: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "walhub_last_segment_timestamp_seconds",
			Help: "When the newest segment was stored (Unix time)."}, label),
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "walhub_receiver_streaming",
			Help: "1 while the receiver streams from the server, else 0."}, label),
	}
	reg.MustRegister(m.segments, m.bytes, m.receivedLSN, m.flushedLSN, m.serverLSN, m.lastSegmentAt, m.connected)
	return m
}

// serverMetrics are the metrics of one server; every method is a no-op on nil.
type serverMetrics struct {
	segments, bytes                                         prometheus.Counter
	receivedLSN, flushedLSN, serverLSN, lastSegmentAt, conn prometheus.Gauge
}

func (m *Metrics) forServer(server string) *serverMetrics {
	if m == nil {
		return nil
	}
	return &serverMetrics{
		segments: m.segments.WithLabelValues(server), bytes: m.bytes.WithLabelValues(server),
		receivedLSN: m.receivedLSN.WithLabelValues(server), flushedLSN: m.flushedLSN.WithLabelValues(server),
		serverLSN: m.serverLSN.WithLabelValues(server), lastSegmentAt: m.lastSegmentAt.WithLabelValues(server),
		conn: m.connected.WithLabelValues(server),
	}
}
