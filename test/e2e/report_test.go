package e2e

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/report"
)

// TestReportMatchesObservedDowntime: a protected guest's emulator is killed with SIGKILL;
// the test measures the downtime it sees itself, from the kill to the domain running again
// under a new emulator (polling libvirt), and `hass report -o json` must give the same
// downtime for that VM to the second, with one vm-crash failure, recovered.
func TestReportMatchesObservedDowntime(t *testing.T) {
	d := startHass(t, "")
	name := guest(t)
	d.hass("vm", "protect", name)
	waitVM(t, d, name, recoverWithin, "healthy", func(v VM) bool { return v.State == "healthy" && v.Observed == "running" })

	pid, killed := killQemu(t, name)
	var back time.Time
	waitFor(t, recoverWithin, name+" running again", func() (bool, string) {
		s, p := domState(t, name), qemuPID(t, name)
		if s == "running" && p != 0 && p != pid {
			back = time.Now()
			return true, ""
		}
		return false, s
	})
	observed := back.Sub(killed)
	waitVM(t, d, name, recoverWithin, "healthy again", func(v VM) bool { return v.State == "healthy" && v.Observed == "running" })
	waitFor(t, 10*time.Second, "the recovered event", func() (bool, string) { return d.countEvents(name, "recovered") == 1, "" })

	out := d.hass("report", "--since", "1h", "-o", "json")
	var r report.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("hass report -o json: %v\n%s", err, out)
	}
	var row *report.Row
	for i := range r.VMs {
		if r.VMs[i].Name == name {
			row = &r.VMs[i]
		}
	}
	if row == nil {
		t.Fatalf("no row for %s:\n%s", name, out)
	}
	got := row.Downtime.Duration()
	t.Logf("kill -9 -> running again: observed %s, hass report %s (time to recover %s)", observed.Round(time.Millisecond), got, row.WorstTTR.Duration())
	if diff := math.Abs(got.Seconds() - observed.Seconds()); diff >= 1 {
		t.Errorf("hass report says %s of downtime, the test saw %s: %.3f s apart, want under 1 s", got, observed, diff)
	}
	if row.Failures != 1 || row.Recovered != 1 || row.DownNow != 0 || row.WorstTTR != row.Downtime {
		t.Errorf("row %+v: want 1 failure, recovered, its time to recover its downtime", *row)
	}
	if len(r.Kinds) != 1 || r.Kinds[0].Name != "vm-crash" || r.Kinds[0].Failures != 1 {
		t.Errorf("kinds %+v, want one vm-crash", r.Kinds)
	}
	// The row's durations are rounded to the millisecond in JSON; the availability is not.
	tol := 100 * 2e-3 / row.Protected.Duration().Seconds()
	if want := 100 * (1 - float64(row.Downtime)/float64(row.Protected)); math.Abs(row.Avail-want) > tol || row.Avail >= 100 {
		t.Errorf("availability %v%%, want %v%%", row.Avail, want)
	}
	// The table says the same.
	table := d.hass("report", "--since", "1h")
	if !strings.Contains(table, name) || !strings.Contains(table, "vm-crash") {
		t.Errorf("hass report:\n%s", table)
	}
	// And the events behind it, filtered.
	evs := d.hass("events", "--vm", name, "--kind", "vm-crash", "-o", "json")
	if !strings.Contains(evs, `"type": "detect"`) || !strings.Contains(evs, `"type": "recovered"`) {
		t.Errorf("hass events --vm %s --kind vm-crash:\n%s", name, evs)
	}
}
