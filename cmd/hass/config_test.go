package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hass.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const goodConfig = `# every command's section
up:
  data-dir: /srv/hass
  protect-all: true
  resync: 5s
  log-level: debug
controller:
  name: c1
  etcd-initial-cluster: c1=http://10.0.0.1:2380
  bmc-poll: 2s
  fence-tries: 5
agent:
  etcd: [http://10.0.0.1:2379, http://10.0.0.2:2379]
  heartbeat: 10.0.1.5:7946
  lease-ttl: 6s
`

func TestConfigCheck(t *testing.T) {
	p := writeConfig(t, goodConfig)
	code, out, errs := hass("config", "check", "--config", p)
	if code != 0 || out != p+": ok: up 4 settings; controller 4 settings; agent 3 settings\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
	bad := writeConfig(t, "up:\n  data-dir: /x\n  resync: 500ms\n  protect-all: yes\nagent:\n  lease-tll: 5s\ncontroller:\n  fence-tries: three\n  log-level: loud\n")
	code, out, errs = hass("config", "check", "--config", bad)
	want := []string{
		bad + ":3:11: up.resync: 500ms: want at least 1s",
		bad + `:4:16: up.protect-all: want true or false, got a string`,
		bad + ":8:16: controller.fence-tries: want an integer, got a string",
		bad + `:9:14: controller.log-level: "loud": want debug, info, warn or error`,
		bad + ":6:14: agent.lease-tll: unknown setting (hass agent takes: ",
	}
	if code != 1 || out != "" {
		t.Fatalf("bad file: exit %d, stdout %q", code, out)
	}
	for _, w := range want {
		if !strings.Contains(errs, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errs)
		}
	}
	if n := strings.Count(errs, "\n"); n != len(want) {
		t.Errorf("%d lines on stderr, want one per problem (%d):\n%s", n, len(want), errs)
	}
	code, _, errs = hass("config", "check", "--config", filepath.Join(t.TempDir(), "missing.yaml"))
	if code != 1 || !strings.Contains(errs, "missing.yaml: cannot read the config file: no such file or directory") {
		t.Errorf("missing explicit file: exit %d, %q", code, errs)
	}
}

// TestConfigAppliedToDaemons: each daemon command takes its section's values for the flags
// the command line did not give, and refuses to start on a bad file (naming line and field).
// The commands are run with their RunE replaced: what is checked is the flags they would run with.
func TestConfigAppliedToDaemons(t *testing.T) {
	p := writeConfig(t, goodConfig)
	for _, tc := range []struct {
		cmd  func() *cobra.Command
		args []string
		want map[string]string
	}{
		{upCmd, []string{"--config", p, "--resync", "7s"}, map[string]string{"data-dir": "/srv/hass", "protect-all": "true", "resync": "7s", "log-level": "debug", "listen": "unix:///run/hass/hass.sock"}},
		{controllerCmd, []string{"--config", p}, map[string]string{"name": "c1", "etcd-initial-cluster": "c1=http://10.0.0.1:2380", "bmc-poll": "2s", "fence-tries": "5", "data-dir": "/var/lib/hass"}},
		{agentCmd, []string{"--config", p, "--heartbeat", "10.0.1.9:7946"}, map[string]string{"etcd": "http://10.0.0.1:2379,http://10.0.0.2:2379", "heartbeat": "10.0.1.9:7946", "lease-ttl": "6s"}},
	} {
		c := withConfig(tc.cmd())
		ran := false
		c.RunE = func(cmd *cobra.Command, _ []string) error {
			ran = true
			for k, v := range tc.want {
				if got := cmd.Flags().Lookup(k).Value.String(); got != v {
					t.Errorf("%s --%s = %q, want %q", c.Name(), k, got, v)
				}
			}
			return nil
		}
		c.SetArgs(tc.args)
		c.SetOut(new(strings.Builder))
		c.SetErr(new(strings.Builder))
		if err := c.Execute(); err != nil || !ran {
			t.Errorf("%s: %v (ran %v)", c.Name(), err, ran)
		}
	}
	// A bad file stops the daemon before it runs, even when the problem is in another section.
	bad := writeConfig(t, "agent:\n  resync: 0.5\n")
	code, out, errs := hass("up", "--config", bad)
	if code != 2 || out != "" || !strings.Contains(errs, bad+":2:11: agent.resync: want a duration such as 500ms, 30s or 2m, got the number 0.5: give its unit") {
		t.Errorf("up with a bad file: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, _, errs = hass("agent", "--config", filepath.Join(t.TempDir(), "nope.yaml"))
	if code != 2 || !strings.Contains(errs, "nope.yaml: cannot read the config file") {
		t.Errorf("agent with a missing explicit file: exit %d, %q", code, errs)
	}
}

// TestConfigCoversEveryFlag: every flag of the three daemons can be set in the file (a
// flag the file could not set would be refused as unknown).
func TestConfigCoversEveryFlag(t *testing.T) {
	for name, fs := range daemonFlags() {
		var b strings.Builder
		b.WriteString(name + ":\n")
		n := 0
		fs.VisitAll(func(fl *pflagFlag) {
			if fl.Name == "help" {
				return
			}
			n++
			v := fl.DefValue
			switch fl.Value.Type() {
			case "string":
				v = "'" + strings.ReplaceAll(v, "'", "''") + "'"
			}
			b.WriteString("  " + fl.Name + ": " + v + "\n")
		})
		p := writeConfig(t, b.String())
		code, out, errs := hass("config", "check", "--config", p)
		if code != 0 || !strings.Contains(out, name+" "+itoa(n)+" settings") {
			t.Errorf("%s: every flag at its default:\n%s\nexit %d, %q %q", name, b.String(), code, out, errs)
		}
	}
}

type pflagFlag = pflag.Flag

func itoa(n int) string { return strconv.Itoa(n) }
