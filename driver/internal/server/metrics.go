package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc/codes"
)

// Metric names; documented in docs/driver.md. Labels have bounded values
// only: volume type labels, gRPC code names, operation names.
const (
	metricPublishTotal   = "datadog_csi_driver_node_publish_total"
	metricUnpublishTotal = "datadog_csi_driver_node_unpublish_total"
	metricDuration       = "datadog_csi_driver_operation_duration_seconds"
	metricBuildInfo      = "datadog_csi_driver_build_info"
)

type metrics struct {
	registry  *prometheus.Registry
	publish   *prometheus.CounterVec
	unpublish *prometheus.CounterVec
	duration  *prometheus.HistogramVec
}

func newMetrics(driverName string) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		publish: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPublishTotal,
			Help: "NodePublishVolume calls by volume type and gRPC code.",
		}, []string{"type", "code"}),
		unpublish: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricUnpublishTotal,
			Help: "NodeUnpublishVolume calls by gRPC code (the request carries no volume type).",
		}, []string{"code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricDuration,
			Help:    "Duration of publish and unpublish operations, by operation and gRPC code.",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5},
		}, []string{"operation", "code"}),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricBuildInfo,
		Help: "Always 1; labels carry the driver name and version.",
	}, []string{"driver_name", "version"})
	buildInfo.WithLabelValues(driverName, Version).Set(1)
	m.registry.MustRegister(m.publish, m.unpublish, m.duration, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(operation, typeLabel string, code codes.Code, d time.Duration) {
	switch operation {
	case "publish":
		m.publish.WithLabelValues(typeLabel, code.String()).Inc()
	case "unpublish":
		m.unpublish.WithLabelValues(code.String()).Inc()
	}
	m.duration.WithLabelValues(operation, code.String()).Observe(d.Seconds())
}
