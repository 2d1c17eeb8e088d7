package daemon

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/hypervisor"
)

// scrapeMetrics GETs /metrics of a running daemon.
func scrapeMetrics(t *testing.T, r *running) string {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+r.addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %v\n%s", resp.StatusCode, err, b)
	}
	return string(b)
}

// sample returns the value of the series whose line starts with series ("name{labels}").
func sample(body, series string) (float64, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// TestMetricsEndpoint: a real daemon (hass up's wiring over an embedded etcd, a fake
// hypervisor) serves /metrics on its API listener; after a crash and its recovery, the
// counters, histograms and gauges say so, and promtool finds nothing wrong.
func TestMetricsEndpoint(t *testing.T) {
	r, drv := startProtected(t, t.TempDir())
	drv.crash("vm1")
	eventually(t, 15*time.Second, "vm1 recovered", func() (bool, string) {
		return hasEvent(r.events("vm1"), "recovered", "vm-crash") && drv.state("vm1") == hypervisor.Running, fmt.Sprint(r.events("vm1"))
	})
	var body string
	eventually(t, 10*time.Second, "the metrics", func() (bool, string) {
		body = scrapeMetrics(t, r)
		h, _ := sample(body, `hass_vms{state="healthy"}`)
		return h == 1, body
	})
	for series, want := range map[string]float64{
		`hass_detections_total{kind="vm-crash"}`:        1,
		`hass_recoveries_total{kind="vm-crash"}`:        1,
		`hass_recovery_seconds_count{kind="vm-crash"}`:  1,
		`hass_detection_seconds_count{kind="vm-crash"}`: 1,
		`hass_detections_total{kind="host-down"}`:       0,
		`hass_leader`:                            1,
		`hass_hosts{state="up"}`:                 1,
		`hass_host_libvirt_connected{host="h1"}`: 1,
		`hass_vms{state="recovering"}`:           0,
	} {
		if got, ok := sample(body, series); !ok || got != want {
			t.Errorf("%s = %v (found %v), want %v", series, got, ok, want)
		}
	}
	if term, ok := sample(body, "hass_leader_term"); !ok || term < 1 {
		t.Errorf("hass_leader_term = %v", term)
	}
	if n, ok := sample(body, "hass_store_write_seconds_count"); !ok || n < 3 {
		t.Errorf("hass_store_write_seconds_count = %v: the store's writes are not timed", n)
	}
	if rec, ok := sample(body, `hass_recovery_seconds_sum{kind="vm-crash"}`); !ok || rec <= 0 || rec > 15 {
		t.Errorf("hass_recovery_seconds_sum = %v", rec)
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	} else if os.Getenv("HASS_REQUIRE_PROMTOOL") == "1" {
		t.Errorf("promtool not installed and HASS_REQUIRE_PROMTOOL=1")
	}
	// /metrics needs a token, like the rest of the API, and is GET only.
	for _, tc := range []struct {
		method, token string
		want          int
	}{{"GET", "", http.StatusUnauthorized}, {"POST", r.token, http.StatusMethodNotAllowed}} {
		req, err := http.NewRequest(tc.method, "http://"+r.addr+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s /metrics (token %t): %d, want %d", tc.method, tc.token != "", resp.StatusCode, tc.want)
		}
	}
}
