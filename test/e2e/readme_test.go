package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReadmeDemo runs the README's quick-start demo lines exactly as written, as fast as a
// shell runs them, against `hass up --protect-all`: the demo guest is protected the moment
// it is started, its kill -9 is recovered, and a virsh destroy is honoured.
func TestReadmeDemo(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := demoLines(t, string(readme))
	if len(lines) < 4 || !strings.Contains(lines[0], "demo-guest.sh demo1") || !strings.Contains(lines[len(lines)-1], "destroy demo1") {
		t.Fatalf("the README's demo block changed shape; update this test: %q", lines)
	}
	_, _ = virshErr("destroy", "demo1")
	_, _ = virshErr("undefine", "demo1")
	t.Cleanup(func() {
		_, _ = virshErr("destroy", "demo1")
		_, _ = virshErr("undefine", "demo1")
	})
	d := startHass(t, "", "--protect-all")

	// The lines run where `bin/hass` and `./scripts/demo-guest.sh` are, as in a checkout.
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "bin"), 0o755))
	must(t, os.Symlink(hassBin, filepath.Join(root, "bin", "hass")))
	scripts, err := filepath.Abs("../../scripts")
	must(t, err)
	must(t, os.Symlink(scripts, filepath.Join(root, "scripts")))
	run := func(line string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", line)
		cmd.Dir = root
		// The README's lines run as root after hass up, which reads /var/lib/hass/admin.token;
		// this hass up keeps its data (and token) elsewhere.
		cmd.Env = append(os.Environ(), "HASS_SERVER=http://"+d.addr, "HASS_TOKEN_FILE="+d.tokenFile())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("README line %q: %v\n%s", line, err, out)
		}
		t.Logf("$ %s\n%s", line, out)
		return string(out)
	}
	// demo-guest, list, then kill -9 with no pause in between.
	run(lines[0])
	run(lines[1])
	pid := qemuPID(t, "demo1")
	run(lines[2])
	waitRunning(t, "demo1", pid, recoverWithin)
	waitVM(t, d, "demo1", recoverWithin, "healthy and running", func(v VM) bool {
		return v.State == "healthy" && v.Observed == "running" && v.Desired == "running"
	})
	events := run(lines[3])
	if !strings.Contains(events, "recovered") || !strings.HasSuffix(events, "\n") {
		t.Fatalf("hass events: want a recovered row and a final newline, got %q", events)
	}
	run(lines[len(lines)-1])
	waitVM(t, d, "demo1", recoverWithin, "stopped by the user", func(v VM) bool { return v.Desired == "stopped" })
	stays(t, "demo1", "shut off", 5*time.Second)
}

// demoLines returns the commands of the README block that follows "In another shell",
// without their comments.
func demoLines(t *testing.T, readme string) []string {
	t.Helper()
	i := strings.Index(readme, "In another shell")
	if i < 0 {
		t.Fatal(`README has no "In another shell" demo`)
	}
	block := readme[i:]
	start := strings.Index(block, "```sh\n")
	end := strings.Index(block[start+6:], "```")
	if start < 0 || end < 0 {
		t.Fatal("README demo block not found")
	}
	var out []string
	for _, l := range strings.Split(block[start+6:start+6+end], "\n") {
		if j := strings.Index(l, " #"); j >= 0 {
			l = l[:j]
		}
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
