package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func hass(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestSimJSONFieldsAndDeterminism(t *testing.T) {
	args := []string{"sim", "--seed", "3", "--hosts", "4", "--vms", "30", "--hours", "6", "--json"}
	code, out, errs := hass(args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, out)
	}
	for _, k := range []string{"operations", "faults", "recoveries", "false_recoveries", "missed_failures",
		"split_brain", "recovery_p50_ms", "recovery_p99_ms"} {
		v, ok := m[k].(float64)
		if !ok || v != float64(int64(v)) {
			t.Errorf("field %s = %v, want an integer", k, m[k])
		}
	}
	_, again, _ := hass(args...)
	if again != out {
		t.Errorf("same seed, different bytes:\n%s\n%s", out, again)
	}
}

func TestSimReadableSummary(t *testing.T) {
	code, out, _ := hass("sim", "--hosts", "2", "--vms", "5", "--hours", "1")
	if code != 0 || !strings.Contains(out, "false recoveries") || !strings.Contains(out, "recovery p99") {
		t.Fatalf("exit %d, summary:\n%s", code, out)
	}
}

func TestSimBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sim", "--hosts", "0"}, "hosts 0"},
		{[]string{"sim", "--vms", "-3"}, "vms -3"},
		{[]string{"sim", "--hours", "-1"}, "--hours -1"},
		{[]string{"sim", "--detector", "smart"}, `--detector "smart"`},
		{[]string{"sim", "--seed", "x"}, "--seed"},
		{[]string{"sim", "extra"}, "unknown command"},
		{[]string{"sim", "--scenario", "/nonexistent/x"}, "scenario x"},
	} {
		code, out, errs := hass(tc.args...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want an error naming %q", tc.args, code, errs, tc.want)
		}
		if out != "" {
			t.Errorf("%v: printed %q on stdout despite the error", tc.args, out)
		}
	}
}

func TestSimScenarioStory(t *testing.T) {
	dir := filepath.Join("..", "..", "scenarios", "crash-restart-in-place")
	code, out, errs := hass("sim", "--scenario", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	want, err := os.ReadFile(filepath.Join(dir, "log.expect"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out, string(want)) || !strings.HasPrefix(out, "# ") {
		t.Fatalf("story:\n%s\nwant it to end with log.expect:\n%s", out, want)
	}
}

func TestScenarioMalformed(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "README"), []byte("x\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "start"), []byte("host h1\nvm v1 host=h9\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "cmdlist"), []byte("5s vm v1 crash\n"), 0o644)
	code, _, errs := hass("sim", "--scenario", dir)
	if code == 0 || !strings.Contains(errs, "start:2") || !strings.Contains(errs, `unknown host "h9"`) {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
}

func TestBenchSmallShape(t *testing.T) {
	code, out, errs := hass("bench", "--shape", "1000/20/10m", "--sim=false")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"engine inputs per second (1 core, mixed workload, 1,000 VMs on 20 hosts)",
		"engine CPU per second of cluster life", "mix: 1,000 VMs on 20 hosts, 10m0s of virtual time", "action result", "snapshot", "placements"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hass sim") {
		t.Errorf("--sim=false still measured the simulator:\n%s", out)
	}
}

func TestBenchBadShape(t *testing.T) {
	for _, tc := range []struct {
		shape, want string
	}{
		{"1000/20", "want VMS/HOSTS/WINDOW"},
		{"x/20/1h", "vms"},
		{"1000/20/soon", "window"},
		{"1000/1/1h", "hosts 1"},
		{"100000/20/1h", "at most 72 per host"},
		{"1000/20/5s", "window 5s"},
	} {
		code, out, errs := hass("bench", "--shape", tc.shape)
		if code != 2 || !strings.Contains(errs, tc.want) || out != "" {
			t.Errorf("--shape %s: exit %d, stdout %q, stderr %q, want exit 2 naming %q", tc.shape, code, out, errs, tc.want)
		}
	}
}
