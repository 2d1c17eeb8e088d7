package sim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const goodStart = "host h1 mem=4096\nhost h2 mem=4096 fencing=yes\nvm v1 host=h1 mem=512\n"

// writeScenario writes a scenario folder under a temporary directory; a nil file is left out.
func writeScenario(t testing.TB, name string, files map[string]*string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, body := range files {
		if body == nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, f), []byte(*body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func str(s string) *string { return &s }

// scenarioFiles returns a valid scenario with the given files replaced (nil: missing).
func scenarioFiles(over map[string]*string) map[string]*string {
	files := map[string]*string{
		"README":  str("a scenario that parses\n"),
		"start":   str(goodStart),
		"cmdlist": str("5s vm v1 crash\n10s api stop v1\nend 1m\n"),
	}
	for k, v := range over {
		files[k] = v
	}
	return files
}

func TestLoadScenarioGood(t *testing.T) {
	dir := writeScenario(t, "good", scenarioFiles(map[string]*string{
		"cmdlist": str("# a comment\n\n5s vm v1 crash   # trailing comment\n5s bus drop 2\n10s bus hold 1 2s\n" +
			"20s api migrate v1 h2\n30s virsh destroy v1\n40s host h1 power-off\nend 1m\n"),
		"log.expect": str("story\n"),
	}))
	sc, err := LoadScenario(dir)
	if err != nil {
		t.Fatal(err)
	}
	if sc.Name != "good" || sc.Title != "a scenario that parses" || sc.Expect != "story\n" {
		t.Fatalf("name %q title %q expect %q", sc.Name, sc.Title, sc.Expect)
	}
	if len(sc.hosts) != 2 || !sc.hosts[1].fencing || sc.hosts[0].mem != 4096 || len(sc.vms) != 1 || sc.vms[0].mem != 512 {
		t.Fatalf("hosts %+v vms %+v", sc.hosts, sc.vms)
	}
	if len(sc.cmds) != 6 || sc.end != time.Minute {
		t.Fatalf("%d commands, end %s; want 6 and 1m", len(sc.cmds), sc.end)
	}
	if c := sc.cmds[0]; c.line != 3 || c.at != 5*time.Second || strings.Join(c.args, " ") != "vm v1 crash" {
		t.Fatalf("first command %+v", c)
	}
}

func TestLoadScenarioErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]*string
		want  []string // all must appear in the error
	}{
		{"missing README", map[string]*string{"README": nil}, []string{"README"}},
		{"empty README", map[string]*string{"README": str("  \n")}, []string{"README", "one non-empty line"}},
		{"two-line README", map[string]*string{"README": str("first line\nsecond line\n")}, []string{"README", "one non-empty line"}},
		{"missing start", map[string]*string{"start": nil}, []string{"start"}},
		{"no hosts", map[string]*string{"start": str("# nothing\n")}, []string{"start", "no hosts"}},
		{"unknown host in a vm line", map[string]*string{"start": str("host h1\nvm v1 host=h7\n")},
			[]string{"start:2", "vm v1", "host", `"h7"`}},
		{"vm before its host", map[string]*string{"start": str("vm v1 host=h1\nhost h1\n")},
			[]string{"start:1", `"h1"`, "hosts come first"}},
		{"vm without host", map[string]*string{"start": str("host h1\nvm v1 mem=512\n")},
			[]string{"start:2", "vm v1", "host="}},
		{"bad vm mem", map[string]*string{"start": str("host h1\n\nvm v1 host=h1 mem=lots\n")},
			[]string{"start:3", "vm v1", "mem", "lots"}},
		{"bad host mem", map[string]*string{"start": str("host h1 mem=-4\n")},
			[]string{"start:1", "host h1", "mem", "-4"}},
		{"bad fencing", map[string]*string{"start": str("host h1 fencing=maybe\n")},
			[]string{"start:1", "host h1", "fencing", "maybe"}},
		{"knows without itself", map[string]*string{"start": str("host h1 knows=h2\n")},
			[]string{"start:1", "host h1", "knows", "its own host"}},
		{"knows a bad name", map[string]*string{"start": str("host h1 knows=h1,,h2\n")},
			[]string{"start:1", "host h1", "knows", "distinct host names"}},
		{"bad window", map[string]*string{"start": str("host h1\nvm v1 host=h1 window=forever\n")},
			[]string{"start:2", "vm v1", "window", "forever"}},
		{"zero window", map[string]*string{"start": str("host h1\nvm v1 host=h1 window=0s\n")},
			[]string{"start:2", "vm v1", "window"}},
		{"negative max-restarts", map[string]*string{"start": str("host h1\nvm v1 host=h1 max-restarts=-1\n")},
			[]string{"start:2", "vm v1", "max-restarts"}},
		{"bad guest shutdown policy", map[string]*string{"start": str("host h1\nvm v1 host=h1 on-guest-shutdown=ignore\n")},
			[]string{"start:2", "vm v1", "on-guest-shutdown", "ignore"}},
		{"unknown vm field", map[string]*string{"start": str("host h1\nvm v1 host=h1 colour=red\n")},
			[]string{"start:2", "vm v1", "colour"}},
		{"unknown host field", map[string]*string{"start": str("host h1 cpus=4\n")},
			[]string{"start:1", "host h1", "cpus"}},
		{"host defined twice", map[string]*string{"start": str("host h1\nhost h1\n")},
			[]string{"start:2", "h1", "twice"}},
		{"vm defined twice", map[string]*string{"start": str("host h1\nvm v1 host=h1\nvm v1 host=h1\n")},
			[]string{"start:3", "v1", "twice"}},
		{"unknown start line", map[string]*string{"start": str("host h1\nrack r1\n")},
			[]string{"start:2", "rack"}},
		{"missing cmdlist", map[string]*string{"cmdlist": nil}, []string{"cmdlist"}},
		{"unknown command", map[string]*string{"cmdlist": str("5s vm v1 crash\n6s dance v1\n")},
			[]string{"cmdlist:2", "unknown command", "dance"}},
		{"unknown api operation", map[string]*string{"cmdlist": str("5s api explode v1\n")},
			[]string{"cmdlist:1", "api", "explode"}},
		{"unknown vm action", map[string]*string{"cmdlist": str("5s vm v1 melt\n")},
			[]string{"cmdlist:1", "vm v1", "melt"}},
		{"unknown host action", map[string]*string{"cmdlist": str("5s host h1 melt\n")},
			[]string{"cmdlist:1", "host h1", "melt"}},
		{"wrong arity: api stop with two arguments", map[string]*string{"cmdlist": str("\n\n5s api stop v1 v1\n")},
			[]string{"cmdlist:3", "api stop", "want 1 argument(s), got 2"}},
		{"wrong arity: migrate without host", map[string]*string{"cmdlist": str("5s virsh migrate v1\n")},
			[]string{"cmdlist:1", "virsh migrate", "want 2 argument(s), got 1"}},
		{"wrong arity: vm without action", map[string]*string{"cmdlist": str("5s vm v1\n")},
			[]string{"cmdlist:1", "vm", "NAME ACTION"}},
		{"wrong arity: bus hold without duration", map[string]*string{"cmdlist": str("5s bus hold 2\n")},
			[]string{"cmdlist:1", "bus hold"}},
		{"bus count not a number", map[string]*string{"cmdlist": str("5s bus drop some\n")},
			[]string{"cmdlist:1", "bus drop", "some"}},
		{"offset without command", map[string]*string{"cmdlist": str("5s\n")},
			[]string{"cmdlist:1", "missing command"}},
		{"bad offset", map[string]*string{"cmdlist": str("soon vm v1 crash\n")},
			[]string{"cmdlist:1", "offset", "soon"}},
		{"negative offset", map[string]*string{"cmdlist": str("-5s vm v1 crash\n")},
			[]string{"cmdlist:1", "offset", "-5s"}},
		{"offsets going backwards", map[string]*string{"cmdlist": str("10s vm v1 crash\n5s api start v1\n")},
			[]string{"cmdlist:2", "offset 5s", "before", "10s"}},
		{"offset after end", map[string]*string{"cmdlist": str("5s vm v1 crash\n2m api start v1\nend 1m\n")},
			[]string{"cmdlist:2", "offset 2m0s", "after the end 1m0s"}},
		{"bad end", map[string]*string{"cmdlist": str("5s vm v1 crash\nend never\n")},
			[]string{"cmdlist:2", "end", "never"}},
		{"zero end", map[string]*string{"cmdlist": str("end 0s\n")},
			[]string{"cmdlist:1", "end", "positive"}},
		{"unknown vm in a command", map[string]*string{"cmdlist": str("5s vm v1 crash\n6s api stop v9\n")},
			[]string{"cmdlist:2", "api stop", `unknown vm "v9"`}},
		{"unknown vm in a vm command", map[string]*string{"cmdlist": str("5s vm v9 crash\n")},
			[]string{"cmdlist:1", `unknown vm "v9"`}},
		{"unknown host in a command", map[string]*string{"cmdlist": str("5s host h9 power-off\n")},
			[]string{"cmdlist:1", `unknown host "h9"`}},
		{"unknown migration target", map[string]*string{"cmdlist": str("5s api migrate v1 h9\n")},
			[]string{"cmdlist:1", "api migrate", `unknown host "h9"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeScenario(t, "bad", scenarioFiles(tc.files))
			sc, err := LoadScenario(dir)
			if err == nil {
				t.Fatalf("loaded: %+v", sc)
			}
			msg := err.Error()
			if !strings.Contains(msg, "scenario bad") {
				t.Errorf("error %q does not name the scenario", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

// TestLoadScenarioNegativeVMMem: a vm's memory must be a number of MiB, as a host's is.
func TestLoadScenarioNegativeVMMem(t *testing.T) {
	dir := writeScenario(t, "bad", scenarioFiles(map[string]*string{"start": str("host h1\nvm v1 host=h1 mem=-512\n")}))
	if _, err := LoadScenario(dir); err == nil || !strings.Contains(err.Error(), "mem") {
		t.Fatalf("err %v, want one naming mem", err)
	}
}

// FuzzParseScenario feeds arbitrary cmdlist text: loading never panics, an error names the
// cmdlist, and what loads is in order and within the end.
func FuzzParseScenario(f *testing.F) {
	f.Add("5s vm v1 crash\n10s api stop v1\nend 1m\n")
	f.Add("1s bus hold 3 2s\n2s bus drop 1\n3s virsh migrate v1 h2\n4s host h2 partition\n")
	f.Add("end 5m\n1m api migrate v1 h1 # comment\n")
	f.Add("10s vm v1\n5s api\n\x00 end -1s\n")
	f.Add("1m30s host h1 power-off\n1m30s host h1 power-on\nend 2m\nend 3m\n")
	f.Fuzz(func(t *testing.T, cmdlist string) {
		dir := writeScenario(t, "fz", scenarioFiles(map[string]*string{"cmdlist": &cmdlist}))
		sc, err := LoadScenario(dir)
		if err != nil {
			if !strings.Contains(err.Error(), "scenario fz: cmdlist") {
				t.Fatalf("error %q does not name the cmdlist", err)
			}
			return
		}
		if sc.end <= 0 {
			t.Fatalf("end %s", sc.end)
		}
		var last time.Duration
		for _, c := range sc.cmds {
			if c.at < last || c.at > sc.end || len(c.args) == 0 || c.line < 1 {
				t.Fatalf("command %+v out of order or range (end %s)", c, sc.end)
			}
			last = c.at
		}
	})
}
