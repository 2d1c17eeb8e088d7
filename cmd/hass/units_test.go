package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// unit is a systemd unit file: section -> key -> values (a key may repeat).
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not key=value in a section: %q", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// TestSystemdUnits: deploy/systemd has a unit for hass up, hass agent and hass controller;
// each runs the installed binary with its command, checks the config file first, restarts on
// failure and is wanted by multi-user.target; every flag its command lines give is one the
// command has. Where systemd-analyze exists, it verifies them too (with /bin/true for the
// binary, which a test machine does not have installed) and must say nothing.
func TestSystemdUnits(t *testing.T) {
	cmds := map[string]*cobra.Command{"up": withConfig(upCmd()), "agent": withConfig(agentCmd()), "controller": withConfig(controllerCmd())}
	check := configCmd().Commands()[0]
	for name, cmd := range cmds {
		path := filepath.Join("..", "..", "deploy", "systemd", "hass-"+name+".service")
		u := parseUnit(t, path)
		for _, k := range [][2]string{{"Unit", "Description"}, {"Unit", "After"}, {"Service", "ExecStart"}, {"Service", "Restart"}, {"Install", "WantedBy"}} {
			if len(u[k[0]][k[1]]) != 1 {
				t.Errorf("%s: [%s] %s: %v, want one", path, k[0], k[1], u[k[0]][k[1]])
			}
		}
		if u["Install"]["WantedBy"][0] != "multi-user.target" || u["Service"]["Restart"][0] != "on-failure" {
			t.Errorf("%s: WantedBy %v, Restart %v", path, u["Install"]["WantedBy"], u["Service"]["Restart"])
		}
		if name != "controller" && !strings.Contains(u["Unit"]["After"][0], "libvirtd.service") {
			t.Errorf("%s: not ordered after libvirtd: %v", path, u["Unit"]["After"])
		}
		for _, k := range []string{"ExecStart", "ExecStartPre"} {
			for _, line := range u["Service"][k] {
				args := strings.Fields(line)
				if len(args) < 2 || args[0] != "/usr/local/bin/hass" {
					t.Errorf("%s: %s=%s: want /usr/local/bin/hass COMMAND", path, k, line)
					continue
				}
				c := cmd
				rest := args[2:]
				switch {
				case k == "ExecStart" && args[1] != name:
					t.Errorf("%s: ExecStart runs hass %s", path, args[1])
				case k == "ExecStartPre" && (len(args) < 3 || args[1] != "config" || args[2] != "check"):
					t.Errorf("%s: ExecStartPre=%s: want hass config check", path, line)
					continue
				case k == "ExecStartPre":
					c, rest = check, args[3:]
				}
				for _, a := range rest {
					if !strings.HasPrefix(a, "--") {
						continue
					}
					flag, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
					if c.Flags().Lookup(flag) == nil {
						t.Errorf("%s: %s gives --%s, which hass %s does not have", path, k, flag, c.Name())
					}
				}
			}
		}
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: the units were checked by this test alone")
		return
	}
	dir := t.TempDir()
	var paths []string
	for name := range cmds {
		b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "systemd", "hass-"+name+".service"))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "hass-"+name+".service")
		os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/hass", "/bin/true")), 0o644)
		paths = append(paths, p)
	}
	out, err := exec.Command(sa, append([]string{"verify"}, paths...)...).CombinedOutput()
	if err != nil || strings.Contains(string(out), dir) {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
