package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestGrafanaDashboard: deploy/grafana/hass.json is a dashboard whose every query uses
// metrics this package exports (histograms by their _bucket series), and that uses each of
// them.
func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("../deploy/grafana/hass.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	m := New(&fakeSource{Snapshot{Known: true}})
	drive(m) // so that every histogram has a series
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	ours := map[string]bool{}
	for _, f := range fams {
		name := f.GetName()
		if !strings.HasPrefix(name, "hass_") {
			continue
		}
		if f.GetType().String() == "HISTOGRAM" {
			name += "_bucket"
		}
		ours[name] = false
	}
	for _, n := range []string{"hass_vms", "hass_hosts", "hass_host_libvirt_connected"} { // gauges present once there is state
		ours[n] = false
	}
	metricRE := regexp.MustCompile(`\bhass_[a-z_]+\b`)
	if d.Title != "hass" || len(d.Panels) < 8 {
		t.Fatalf("title %q, %d panels", d.Title, len(d.Panels))
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			names := metricRE.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q uses no hass metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				if _, ok := ours[n]; !ok {
					t.Errorf("panel %q: %s is no metric hass exports", p.Title, n)
				}
				ours[n] = true
			}
		}
	}
	for n, used := range ours {
		if !used {
			t.Errorf("%s is on no panel", n)
		}
	}
}
