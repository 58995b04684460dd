package stream

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the receivers' Prometheus metrics, labelled by server: what
// only the running receiver knows, live (positions, counters). What needs the
// server's or the catalog's view (lag, state judged fresh) is computed at
// scrape time by status.Collector.
type Metrics struct {
	segments      *prometheus.CounterVec
	bytes         *prometheus.CounterVec
	reconnects    *prometheus.CounterVec
	errors        *prometheus.CounterVec
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
		segments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "walhub_receiver_segments_total",
			Help: "WAL segments received and stored."}, label),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "walhub_receiver_wal_bytes_total",
			Help: "Bytes of WAL received (its rate is the server's WAL rate while the receiver keeps up)."}, label),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "walhub_receiver_reconnects_total",
			Help: "Replication sessions started after an earlier one ended."}, label),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "walhub_receiver_errors_total",
			Help: "Replication sessions that ended with an error (connection, protocol, storage, WAL removed)."}, label),
		receivedLSN: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "walhub_receiver_received_lsn_bytes",
			Help: "End of the WAL received (written to the .partial), as a byte position."}, label),
		flushedLSN: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "walhub_receiver_durable_lsn_bytes",
			Help: "End of the WAL fsynced and reported to the server as flushed, as a byte position."}, label),
		serverLSN: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "walhub_receiver_server_lsn_bytes",
			Help: "The server's WAL end as of its last message to the receiver, as a byte position."}, label),
		lastSegmentAt: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "walhub_receiver_last_segment_timestamp_seconds",
			Help: "When this process last stored a complete segment (Unix time; 0 before its first)."}, label),
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "walhub_receiver_streaming",
			Help: "1 while the receiver streams from the server, else 0."}, label),
	}
	reg.MustRegister(m.segments, m.bytes, m.reconnects, m.errors, m.receivedLSN, m.flushedLSN, m.serverLSN, m.lastSegmentAt, m.connected)
	return m
}

// serverMetrics are the metrics of one server.
type serverMetrics struct {
	segments, bytes, reconnects, errors                     prometheus.Counter
	receivedLSN, flushedLSN, serverLSN, lastSegmentAt, conn prometheus.Gauge
}

func (m *Metrics) forServer(server string) *serverMetrics {
	if m == nil {
		return nil
	}
	return &serverMetrics{
		segments: m.segments.WithLabelValues(server), bytes: m.bytes.WithLabelValues(server),
		reconnects: m.reconnects.WithLabelValues(server), errors: m.errors.WithLabelValues(server),
		receivedLSN: m.receivedLSN.WithLabelValues(server), flushedLSN: m.flushedLSN.WithLabelValues(server),
		serverLSN: m.serverLSN.WithLabelValues(server), lastSegmentAt: m.lastSegmentAt.WithLabelValues(server),
		conn: m.connected.WithLabelValues(server),
	}
}
