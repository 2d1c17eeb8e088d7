// Package metrics exports hass's Prometheus metrics, on GET /metrics of the API listener of
// hass up and hass controller. Each process has its own registry (no global one).
//
// Counters and histograms are fed from the event log as this process writes it (through
// store.Observer): detections, recoveries and give-ups by failure kind, detection and
// recovery times (from each recovered event's fault_at, detect_at and recovered_at), fences
// by outcome, and the latency of the store's writes. They count what this process recorded,
// so they grow on the leading controller and restart from 0 with the process (Prometheus's
// rate() and increase() take that in their stride). Gauges are read at each scrape from a
// Source (the controller): VMs and hosts by state, each host's libvirt connection as its
// agent last reported it, whether this controller leads and the leader's term. A controller
// that does not lead knows no VM or host state: it exports hass_leader 0 and the term only.
package metrics

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/store"
)

// Snapshot is what the gauges show, as the Source sees it at a scrape.
type Snapshot struct {
	Leading bool
	Term    int64
	// Known is false when the source knows no VM or host state (it does not lead).
	Known bool
	// VMs and Hosts count by state (healthy, recovering, error, operation, unknown; up,
	// suspect, fenced, maintenance, not-joined, ...).
	VMs, Hosts map[string]int
	// Libvirt is each host's libvirt connection as its agent last reported it.
	Libvirt map[string]bool
}

// Source gives the gauges' values.
type Source interface {
	MetricsSnapshot() Snapshot
}

// VMStates and HostStates are exported at 0 when no VM or host is in them, so that a
// dashboard's series exist before anything happens.
var (
	VMStates   = []string{"healthy", "recovering", "error", "operation", "unknown"}
	HostStates = []string{"up", "suspect", "fenced", "not-joined"}
)

// FenceOutcomes are the fence outcomes counted: a power fence confirmed by the BMC, a host
// declared fenced by its lease's expiry, a host whose BMC said off, a fence that failed.
var FenceOutcomes = []string{"bmc", "lease", "power-off", "failed"}

// Metrics is one process's metrics.
type Metrics struct {
	reg *prometheus.Registry
	src Source

	detections, recoveries, gaveUp *prometheus.CounterVec
	detectTime, recoverTime        *prometheus.HistogramVec
	fences                         *prometheus.CounterVec
	writeTime                      prometheus.Histogram
	writeErrors                    prometheus.Counter

	mu sync.Mutex // guards src
}

// New returns the metrics of a process whose gauges src gives (nil: no gauges yet; see
// SetSource).
func New(src Source) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), src: src}
	m.detections = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hass_detections_total",
		Help: "Failures detected, by failure kind."}, []string{"kind"})
	m.recoveries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hass_recoveries_total",
		Help: "Failed VMs running again, by failure kind."}, []string{"kind"})
	m.gaveUp = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hass_gave_up_total",
		Help: "VMs hass gave up on (policy exhausted: in error until a user acts), by failure kind."}, []string{"kind"})
	buckets := []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300}
	m.detectTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "hass_detection_seconds",
		Help: "Time from a fault to its detection, of recovered failures, by failure kind.", Buckets: buckets}, []string{"kind"})
	m.recoverTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "hass_recovery_seconds",
		Help: "Time from a fault to the VM running again, by failure kind.", Buckets: buckets}, []string{"kind"})
	m.fences = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hass_fences_total",
		Help: "Hosts fenced, by outcome: bmc (power-off confirmed), lease (lease expired and the self-fence margin passed), power-off (its BMC said off), failed (a power fence that failed)."}, []string{"outcome"})
	m.writeTime = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hass_store_write_seconds",
		Help:    "Latency of the store's writes of decisions and events (etcd transactions, each with its disk sync).",
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}})
	m.writeErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "hass_store_write_errors_total",
		Help: "The store's writes of decisions and events that failed."})
	for _, k := range api.FailureKinds {
		m.detections.WithLabelValues(k)
		m.recoveries.WithLabelValues(k)
		m.gaveUp.WithLabelValues(k)
	}
	for _, o := range FenceOutcomes {
		m.fences.WithLabelValues(o)
	}
	m.reg.MustRegister(m.detections, m.recoveries, m.gaveUp, m.detectTime, m.recoverTime, m.fences, m.writeTime, m.writeErrors,
		gauges{m}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// SetSource sets the gauges' source (the controller, made after the store).
func (m *Metrics) SetSource(src Source) {
	m.mu.Lock()
	m.src = src
	m.mu.Unlock()
}

// Registry is the process's registry.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in Prometheus's text format (or OpenMetrics, if asked).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

var _ store.Observer = (*Metrics)(nil)

// Wrote implements store.Observer.
func (m *Metrics) Wrote(took time.Duration, err error) {
	m.writeTime.Observe(took.Seconds())
	if err != nil {
		m.writeErrors.Inc()
	}
}

// Recorded implements store.Observer: it counts what the events say.
func (m *Metrics) Recorded(evs []store.Event) {
	for _, e := range evs {
		kind := api.FailureKindOf(e.Type, e.Kind, e.Msg)
		switch e.Type {
		case "detect":
			if kind != "" {
				m.detections.WithLabelValues(kind).Inc()
			}
		case "gave-up":
			if kind != "" {
				m.gaveUp.WithLabelValues(kind).Inc()
			}
		case "recovered":
			if kind == "" {
				kind = "unknown"
			}
			m.recoveries.WithLabelValues(kind).Inc()
			if e.FaultAt != nil && e.DetectAt != nil && !e.DetectAt.Before(*e.FaultAt) {
				m.detectTime.WithLabelValues(kind).Observe(e.DetectAt.Sub(*e.FaultAt).Seconds())
			}
			if e.FaultAt != nil && e.RecoveredAt != nil && !e.RecoveredAt.Before(*e.FaultAt) {
				m.recoverTime.WithLabelValues(kind).Observe(e.RecoveredAt.Sub(*e.FaultAt).Seconds())
			}
		case "host":
			if why, ok := strings.CutPrefix(e.Msg, "fenced: "); ok {
				switch {
				case strings.HasPrefix(why, "power-off confirmed"):
					m.fences.WithLabelValues("bmc").Inc()
				case strings.HasPrefix(why, "lease expired"):
					m.fences.WithLabelValues("lease").Inc()
				case strings.HasPrefix(why, "power off"):
					m.fences.WithLabelValues("power-off").Inc()
				}
			}
		case "alert":
			if e.Host != "" && e.VM == "" && strings.HasPrefix(e.Msg, "fence failed") {
				m.fences.WithLabelValues("failed").Inc()
			}
		}
	}
}

// gauges collects the Source's snapshot at each scrape.
type gauges struct{ m *Metrics }

var (
	descVMs     = prometheus.NewDesc("hass_vms", "Protected VMs by state, as the leading controller sees them.", []string{"state"}, nil)
	descHosts   = prometheus.NewDesc("hass_hosts", "Hosts by state, as the leading controller sees them.", []string{"state"}, nil)
	descLibvirt = prometheus.NewDesc("hass_host_libvirt_connected", "1 if the host's agent last reported its libvirt connected, else 0.", []string{"host"}, nil)
	descLeader  = prometheus.NewDesc("hass_leader", "1 if this controller leads, else 0.", nil, nil)
	descTerm    = prometheus.NewDesc("hass_leader_term", "The leading controller's term (its election revision); 0 when none leads.", nil, nil)
)

func (g gauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descVMs, descHosts, descLibvirt, descLeader, descTerm} {
		ch <- d
	}
}

func (g gauges) Collect(ch chan<- prometheus.Metric) {
	g.m.mu.Lock()
	src := g.m.src
	g.m.mu.Unlock()
	var s Snapshot
	if src != nil {
		s = src.MetricsSnapshot()
	}
	lead := 0.0
	if s.Leading {
		lead = 1
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, lead)
	ch <- prometheus.MustNewConstMetric(descTerm, prometheus.GaugeValue, float64(s.Term))
	if !s.Known {
		return
	}
	emit := func(d *prometheus.Desc, known []string, counts map[string]int) {
		for _, st := range known {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(counts[st]), st)
		}
		for st, n := range counts {
			if !contains(known, st) {
				ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(n), st)
			}
		}
	}
	emit(descVMs, VMStates, s.VMs)
	emit(descHosts, HostStates, s.Hosts)
	for h, ok := range s.Libvirt {
		v := 0.0
		if ok {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descLibvirt, prometheus.GaugeValue, v, h)
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}
