package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/hassproject/hass/store"
)

type fakeSource struct{ s Snapshot }

func (f *fakeSource) MetricsSnapshot() Snapshot { return f.s }

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func tp(d time.Duration) *time.Time { t := t0.Add(d); return &t }

// drive feeds the metrics what a controller records: two crashes recovered, a panic
// detected and given up on, fences of every outcome, and some store writes.
func drive(m *Metrics) {
	m.Recorded([]store.Event{
		{Seq: 1, Type: "detect", VM: "a", Msg: "vm-crash: the emulator died"},
		{Seq: 2, Type: "recovered", VM: "a", Kind: "vm-crash", FaultAt: tp(0), DetectAt: tp(100 * time.Millisecond), RecoveredAt: tp(1500 * time.Millisecond)},
		{Seq: 3, Type: "detect", VM: "b", Msg: "vm-crash: the emulator died"},
		{Seq: 4, Type: "recovered", VM: "b", Kind: "vm-crash", FaultAt: tp(0), DetectAt: tp(200 * time.Millisecond), RecoveredAt: tp(3 * time.Second)},
		{Seq: 5, Type: "detect", VM: "c", Msg: "guest-panic: reported"},
		{Seq: 6, Type: "gave-up", VM: "c", Msg: "guest-panic: 3 restarts in 10m0s; the vm is in error until a user starts it"},
		{Seq: 7, Type: "host", Host: "h2", Msg: "fenced: power-off confirmed"},
		{Seq: 8, Type: "host", Host: "h3", Msg: "fenced: lease expired and the self-fence margin passed"},
		{Seq: 9, Type: "host", Host: "h4", Msg: "fenced: power off (BMC)"},
		{Seq: 10, Type: "alert", Host: "h5", Msg: "fence failed (ipmitool: timeout): waiting for lease expiry + self-fence margin"},
		{Seq: 11, Type: "host", Host: "h5", Msg: "lease expired: suspect, its VMs are in an unknown state until it is fenced"},
		{Seq: 12, Type: "op", VM: "d", Msg: "stop accepted id=3 source=api"},
	})
	m.Wrote(3*time.Millisecond, nil)
	m.Wrote(40*time.Millisecond, nil)
	m.Wrote(2*time.Second, errors.New("etcdserver: request timed out"))
}

func scrape(t *testing.T, m *Metrics) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	ts := httptest.NewServer(m.Handler())
	defer ts.Close()
	resp, err := ts.Client().Get(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, body)
	}
	return string(body), fams
}

// value returns the value of the series of family name whose labels are labels.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if got[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

func TestScrape(t *testing.T) {
	src := &fakeSource{Snapshot{Leading: true, Term: 42, Known: true,
		VMs:     map[string]int{"healthy": 5, "recovering": 1, "waiting": 2},
		Hosts:   map[string]int{"up": 3, "fenced": 1, "maintenance": 1},
		Libvirt: map[string]bool{"h1": true, "h2": false}}}
	m := New(src)
	drive(m)
	_, fams := scrape(t, m)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"hass_detections_total", []string{"kind", "vm-crash"}, 2},
		{"hass_detections_total", []string{"kind", "guest-panic"}, 1},
		{"hass_detections_total", []string{"kind", "host-down"}, 0},
		{"hass_recoveries_total", []string{"kind", "vm-crash"}, 2},
		{"hass_recoveries_total", []string{"kind", "guest-panic"}, 0},
		{"hass_gave_up_total", []string{"kind", "guest-panic"}, 1},
		{"hass_detection_seconds", []string{"kind", "vm-crash"}, 2},
		{"hass_recovery_seconds", []string{"kind", "vm-crash"}, 2},
		{"hass_fences_total", []string{"outcome", "bmc"}, 1},
		{"hass_fences_total", []string{"outcome", "lease"}, 1},
		{"hass_fences_total", []string{"outcome", "power-off"}, 1},
		{"hass_fences_total", []string{"outcome", "failed"}, 1},
		{"hass_store_write_seconds", nil, 3},
		{"hass_store_write_errors_total", nil, 1},
		{"hass_vms", []string{"state", "healthy"}, 5},
		{"hass_vms", []string{"state", "error"}, 0},
		{"hass_vms", []string{"state", "waiting"}, 2},
		{"hass_hosts", []string{"state", "up"}, 3},
		{"hass_hosts", []string{"state", "maintenance"}, 1},
		{"hass_hosts", []string{"state", "suspect"}, 0},
		{"hass_host_libvirt_connected", []string{"host", "h1"}, 1},
		{"hass_host_libvirt_connected", []string{"host", "h2"}, 0},
		{"hass_leader", nil, 1},
		{"hass_leader_term", nil, 42},
	} {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// The histograms' sums are the times: 0.1 + 0.2 s to detect, 1.5 + 3 s to recover.
	h := fams["hass_recovery_seconds"].Metric[0].Histogram
	if d := fams["hass_detection_seconds"].Metric[0].Histogram; d.GetSampleSum() < 0.2999 || d.GetSampleSum() > 0.3001 || h.GetSampleSum() != 4.5 {
		t.Errorf("sums: detection %v, recovery %v", d.GetSampleSum(), h.GetSampleSum())
	}
	for _, b := range h.Bucket {
		want := map[float64]uint64{1: 0, 2: 1, 5: 2}[b.GetUpperBound()]
		if b.GetUpperBound() == 1 || b.GetUpperBound() == 2 || b.GetUpperBound() == 5 {
			if b.GetCumulativeCount() != want {
				t.Errorf("recovery bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
			}
		}
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}

	// A controller that does not lead: leader 0, the term, no state gauges.
	src.s = Snapshot{Term: 43}
	_, fams = scrape(t, m)
	if value(t, fams, "hass_leader") != 0 || value(t, fams, "hass_leader_term") != 43 {
		t.Error("follower: leader/term wrong")
	}
	if _, ok := fams["hass_vms"]; ok {
		t.Error("a follower exports VM states it does not know")
	}
}

// TestRegistriesAreApart: two processes' metrics (two Metrics) do not share a registry.
func TestRegistriesAreApart(t *testing.T) {
	a, b := New(nil), New(nil)
	drive(a)
	_, fams := scrape(t, b)
	if v := value(t, fams, "hass_detections_total", "kind", "vm-crash"); v != 0 {
		t.Fatalf("b counts a's detections: %v", v)
	}
}

// TestPromtoolCheckMetrics: what /metrics serves passes `promtool check metrics` (Debian's
// prometheus package). Without promtool the test is skipped, unless HASS_REQUIRE_PROMTOOL=1
// (scripts/test.sh installs it and sets that): then it fails.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("HASS_REQUIRE_PROMTOOL") == "1" {
			t.Fatalf("promtool is not installed (apt-get install prometheus), and HASS_REQUIRE_PROMTOOL=1: %v", err)
		}
		t.Skip("promtool not installed (Debian package prometheus); scripts/test.sh installs it")
	}
	m := New(&fakeSource{Snapshot{Leading: true, Term: 7, Known: true, VMs: map[string]int{"healthy": 1},
		Hosts: map[string]int{"up": 1}, Libvirt: map[string]bool{"h1": true}}})
	drive(m)
	body, _ := scrape(t, m)
	p := filepath.Join(t.TempDir(), "metrics.txt")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s\n(the metrics are in %s)", err, out, p)
	}
}
