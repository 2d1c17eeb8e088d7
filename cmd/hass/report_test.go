package main

import (
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/report"
)

// reportFake: v1 crashed 2.5 s, an hour ago; v2 was stopped by its user (no downtime); v3
// panicked 10 minutes ago and is not back.
func reportFake() *cliFake {
	f := newCLIFake("v1", "v2", "v3")
	now := time.Now().UTC()
	f.events = nil
	add := func(e api.Event) {
		e.Seq = uint64(len(f.events) + 1)
		f.events = append(f.events, e)
	}
	fault, rec := now.Add(-time.Hour), now.Add(-time.Hour+2500*time.Millisecond)
	add(api.Event{At: fault, Type: "detect", VM: "v1", Host: "h1", Msg: "vm-crash: the emulator died"})
	add(api.Event{At: rec, Type: "recovered", VM: "v1", Host: "h1", Kind: "vm-crash", FaultAt: &fault, DetectAt: &fault, RecoveredAt: &rec})
	add(api.Event{At: now.Add(-30 * time.Minute), Type: "op", VM: "v2", Host: "h1", Msg: "stop accepted id=3 source=api"})
	add(api.Event{At: now.Add(-10 * time.Minute), Type: "detect", VM: "v3", Host: "h1", Msg: "guest-panic: reported"})
	return f
}

func TestReport(t *testing.T) {
	srv := cliServer(t, reportFake())
	code, out, errs := hass("report", "--since", "1d", "-o", "json", "--server", srv)
	var r report.Report
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil {
		t.Fatalf("exit %d: %q %q", code, out, errs)
	}
	if len(r.VMs) != 3 || r.VMs[0].Name != "v1" || r.VMs[0].Downtime != 2.5 || r.VMs[0].Failures != 1 || r.VMs[0].Recovered != 1 {
		t.Fatalf("v1: %+v", r.VMs)
	}
	if v2 := r.VMs[1]; v2.Failures != 0 || v2.Downtime != 0 || v2.Avail != 100 {
		t.Errorf("v2 (stopped by its user): %+v", v2)
	}
	if v3 := r.VMs[2]; v3.DownNow != 1 || v3.Downtime < 599 || v3.Downtime > 610 {
		t.Errorf("v3 (down for 10 minutes): %+v", v3)
	}
	if r.Total.Failures != 2 || len(r.Kinds) != 2 || r.Kinds[0].Name != "guest-panic" || r.Until.Sub(r.Since) != 24*time.Hour {
		t.Errorf("total %+v, kinds %+v, window %s", r.Total, r.Kinds, r.Until.Sub(r.Since))
	}

	code, out, _ = hass("report", "--since", "1d", "--server", srv)
	for _, want := range []string{"VM  ", "v1  ", "2.5s", "total", "FAILURE KIND", "vm-crash", "guest-panic", "%\n"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = hass("report", "--since", "1d", "-o", "csv", "--server", srv)
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if code != 0 || err != nil || len(recs) != 1+3+2+1 || recs[0][0] != "scope" || recs[1][1] != "v1" || recs[1][7] != "2.500" || recs[6][0] != "total" {
		t.Errorf("csv: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-o", "xml"}, `--output "xml": want table, json or csv`},
		{[]string{"--since", "lately"}, `--since "lately"`},
	} {
		code, out, errs := hass(append([]string{"report", "--server", srv}, tc.args...)...)
		if code != 2 || out != "" || !strings.Contains(errs, tc.want) {
			t.Errorf("%q: exit %d, %q %q", tc.args, code, out, errs)
		}
	}
}
