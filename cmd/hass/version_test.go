package main

import (
	"strings"
	"testing"

	"github.com/hassproject/hass/version"
)

func TestVersionCommand(t *testing.T) {
	old := version.Version
	t.Cleanup(func() { version.Version = old })
	version.Version = "1.4.2-test"
	code, out, errs := hass("version")
	if code != 0 || !strings.HasPrefix(out, "hass 1.4.2-test (go") || !strings.HasSuffix(out, ")\n") {
		t.Fatalf("version: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, out, _ = hass("version", "--short")
	if code != 0 || out != "1.4.2-test\n" {
		t.Fatalf("version --short: exit %d, %q", code, out)
	}
	if code, _, errs := hass("version", "extra"); code != 2 && code != 1 || errs == "" {
		t.Fatalf("version extra: exit %d, stderr %q", code, errs)
	}
}

// TestCompletion: each shell's script is generated, and completing works through cobra's
// hidden __complete command (what the scripts call): subcommands and flags are offered.
func TestCompletion(t *testing.T) {
	for shell, marker := range map[string]string{"bash": "__start_hass", "zsh": "#compdef hass", "fish": "complete -c hass", "powershell": "Register-ArgumentCompleter"} {
		code, out, errs := hass("completion", shell)
		if code != 0 || !strings.Contains(out, marker) {
			t.Errorf("completion %s: exit %d, stderr %q, script lacks %q", shell, code, errs, marker)
		}
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", ""}, []string{"up", "agent", "controller", "vm", "events", "report", "config", "version", "completion"}},
		{[]string{"__complete", "vm", ""}, []string{"protect", "migrate", "list"}},
		{[]string{"__complete", "events", "--"}, []string{"--follow", "--vm", "--host", "--type", "--kind", "--since"}},
		{[]string{"__complete", "events", "--kind", ""}, []string{"vm-crash", "host-down"}},
	} {
		code, out, errs := hass(tc.args...)
		if code != 0 {
			t.Errorf("%q: exit %d: %s", tc.args, code, errs)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains("\n"+out, "\n"+w) {
				t.Errorf("%q: %q not offered:\n%s", tc.args, w, out)
			}
		}
	}
}
