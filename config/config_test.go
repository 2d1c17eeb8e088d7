package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

var sections = []string{"up", "controller", "agent"}

// testFlags is a flag set of every type the daemons use.
func testFlags() (*pflag.FlagSet, *struct {
	dataDir, etcd string
	protect       bool
	keep          int
	minFree       int64
	resync        time.Duration
}) {
	v := &struct {
		dataDir, etcd string
		protect       bool
		keep          int
		minFree       int64
		resync        time.Duration
	}{}
	fs := pflag.NewFlagSet("up", pflag.ContinueOnError)
	fs.StringVar(&v.dataDir, "data-dir", "/var/lib/hass", "")
	fs.StringVar(&v.etcd, "etcd", "", "")
	fs.BoolVar(&v.protect, "protect-all", false, "")
	fs.IntVar(&v.keep, "keep-events", 100000, "")
	fs.Int64Var(&v.minFree, "store-min-free", 128, "")
	fs.DurationVar(&v.resync, "resync", 30*time.Second, "")
	fs.String("config", "", "")
	return fs, v
}

var checks = map[string]Check{
	"keep-events": func(v string) error {
		if v == "0" {
			return errors.New("want at least 1")
		}
		return nil
	},
}

func TestApplySetsFlags(t *testing.T) {
	f, err := Parse("hass.yaml", []byte(`# hass
up:
  data-dir: /srv/hass   # a comment
  etcd: [http://a:2379, "http://b:2379"]
  protect-all: true
  keep-events: 500
  store-min-free: 0
  resync: 2s
agent:
controller: {}
`), sections)
	if err != nil {
		t.Fatal(err)
	}
	fs, v := testFlags()
	if err := f.Apply("up", fs, []string{"etcd"}, checks); err != nil {
		t.Fatal(err)
	}
	if v.dataDir != "/srv/hass" || v.etcd != "http://a:2379,http://b:2379" || !v.protect || v.keep != 500 || v.minFree != 0 || v.resync != 2*time.Second {
		t.Fatalf("applied: %+v", *v)
	}
	if got := len(f.Sections); got != 3 {
		t.Fatalf("%d sections, want 3", got)
	}
	if s := f.Section("up"); s.Line != 2 || s.Values[0].Line != 3 || s.Values[0].Key != "data-dir" {
		t.Fatalf("positions: %+v", s)
	}
}

func TestCommandLineWins(t *testing.T) {
	f, err := Parse("hass.yaml", []byte("up:\n  data-dir: /from/file\n  resync: 5s\n"), sections)
	if err != nil {
		t.Fatal(err)
	}
	fs, v := testFlags()
	if err := fs.Parse([]string{"--data-dir", "/from/flag"}); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply("up", fs, nil, nil); err != nil {
		t.Fatal(err)
	}
	if v.dataDir != "/from/flag" || v.resync != 5*time.Second {
		t.Fatalf("data-dir %q (want the flag's), resync %s (want the file's)", v.dataDir, v.resync)
	}
}

func TestEmptyFiles(t *testing.T) {
	for _, data := range []string{"", "\n", "# only a comment\n", "---\n", "~\n"} {
		f, err := Parse("hass.yaml", []byte(data), sections)
		if err != nil || len(f.Sections) != 0 {
			t.Errorf("%q: %v, %d sections", data, err, len(f.Sections))
		}
	}
}

// TestErrors: one case per kind of error; each names the file, the line and column, and the
// field.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       string // the whole first error line
	}{
		{"syntax", "up:\n  data-dir: [\n", "hass.yaml:2:1: not valid YAML: did not find expected node content"},
		{"tab indentation", "up:\n\tdata-dir: x\n", "hass.yaml:2:1: not valid YAML: found character that cannot start any token"},
		{"top is a list", "- up\n", "hass.yaml:1:1: want a mapping of sections (up, controller, agent), got a list"},
		{"top is a string", "hello\n", "hass.yaml:1:1: want a mapping of sections (up, controller, agent), got a string"},
		{"two documents", "up: {}\n---\nagent: {}\n", "hass.yaml:2:1: a second YAML document: the file must hold one"},
		{"unknown section", "up: {}\nagnet:\n  etcd: x\n", "hass.yaml:2:1: agnet: unknown section (want up, controller, agent)"},
		{"section twice", "up: {}\nup: {}\n", "hass.yaml:2:1: up: section given twice (first at line 1)"},
		{"section not a mapping", "up: true\n", "hass.yaml:1:5: up: want a mapping of settings (flag: value), got true or false"},
		{"section a list", "up:\n  - data-dir\n", "hass.yaml:2:3: up: want a mapping of settings (flag: value), got a list"},
		{"key twice", "up:\n  resync: 1s\n  resync: 2s\n", "hass.yaml:3:3: up.resync: given twice (first at line 2)"},
		{"key not a word", "up:\n  [a]: 1\n", "hass.yaml:2:3: up: a key must be a flag's name, got a list"},
		{"unknown key", "up:\n  data-dri: /x\n", "hass.yaml:2:13: up.data-dri: unknown setting (hass up takes: data-dir, etcd, keep-events, protect-all, resync, store-min-free)"},
		{"config itself", "up:\n  config: /x\n", "hass.yaml:2:11: up.config: unknown setting"},
		{"bool wanted", "up:\n  protect-all: yes\n", `hass.yaml:2:16: up.protect-all: want true or false, got a string`},
		{"int wanted", "up:\n  keep-events: many\n", "hass.yaml:2:16: up.keep-events: want an integer, got a string"},
		{"int not float", "up:\n  keep-events: 1.5\n", "hass.yaml:2:16: up.keep-events: want an integer, got a number"},
		{"int out of range", "up:\n  keep-events: 99999999999999999999\n", `hass.yaml:2:16: up.keep-events: "99999999999999999999" is not a valid int: value out of range`},
		{"duration without unit", "up:\n  resync: 30\n", "hass.yaml:2:11: up.resync: want a duration such as 500ms, 30s or 2m, got the number 30: give its unit"},
		{"bad duration", "up:\n  resync: 30 seconds\n", `hass.yaml:2:11: up.resync: "30 seconds" is not a valid duration: unknown unit " seconds" in duration "30 seconds"`},
		{"string not bool", "up:\n  data-dir: false\n", `hass.yaml:2:13: up.data-dir: want a string, got false: quote it ("false") if it is meant`},
		{"string not mapping", "up:\n  data-dir: {a: 1}\n", "hass.yaml:2:13: up.data-dir: want a string, got a mapping"},
		{"null value", "up:\n  data-dir:\n", "hass.yaml:2:12: up.data-dir: want a string, got nothing (null)"},
		{"list where none", "up:\n  data-dir: [a, b]\n", "hass.yaml:2:13: up.data-dir: want a string, got a list"},
		{"list of lists", "up:\n  etcd: [a, [b]]\n", "hass.yaml:2:13: up.etcd: want a list of strings, got a list in it"},
		{"comma in item", "up:\n  etcd: ['a,b']\n", `hass.yaml:2:9: up.etcd: list item "a,b" holds a comma: give one item per entry`},
		{"alias", "up:\n  data-dir: &d /x\n  etcd: *d\n", "hass.yaml:3:9: up.etcd: aliases are not supported: write the value"},
		{"check refuses", "up:\n  keep-events: 0\n", "hass.yaml:2:16: up.keep-events: want at least 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse("hass.yaml", []byte(tc.data), sections)
			if err == nil {
				fs, _ := testFlags()
				err = f.Apply("up", fs, []string{"etcd"}, checks)
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			first := strings.SplitN(err.Error(), "\n", 2)[0]
			if !strings.HasPrefix(first, tc.want) {
				t.Fatalf("error\n  %s\nwant\n  %s", first, tc.want)
			}
			var e *Error
			var es Errors
			if !errors.As(err, &e) && !(errors.As(err, &es) && len(es) > 0) {
				t.Fatalf("%T is neither *Error nor Errors", err)
			}
		})
	}
}

// TestAllErrorsAtOnce: every problem of a file is reported, in file order.
func TestAllErrorsAtOnce(t *testing.T) {
	f, err := Parse("h.yaml", []byte("up:\n  nope: 1\n  resync: x\n  keep-events: 3\n  protect-all: 1\n"), sections)
	if err != nil {
		t.Fatal(err)
	}
	fs, _ := testFlags()
	err = f.Apply("up", fs, nil, nil)
	var es Errors
	if !errors.As(err, &es) || len(es) != 3 || es[0].Line != 2 || es[1].Line != 3 || es[2].Line != 5 {
		t.Fatalf("%v", err)
	}
	if got := strings.Count(err.Error(), "\n"); got != 2 {
		t.Fatalf("%d newlines in %q, want one line per error", got, err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "none.yaml")
	if f, err := Load(missing, false, sections); err != nil || len(f.Sections) != 0 {
		t.Fatalf("missing default file: %v", err)
	}
	if _, err := Load(missing, true, sections); err == nil || !strings.Contains(err.Error(), missing+": cannot read the config file: no such file or directory") {
		t.Fatalf("missing explicit file: %v", err)
	}
	p := filepath.Join(dir, "hass.yaml")
	os.WriteFile(p, []byte("agent:\n  etcd: x\n"), 0o600)
	if f, err := Load(p, true, sections); err != nil || f.Section("agent") == nil || f.Path != p {
		t.Fatalf("load: %v %+v", err, f)
	}
	os.WriteFile(p, make([]byte, MaxSize+1), 0o600)
	if _, err := Load(p, true, sections); err == nil || !strings.Contains(err.Error(), "not a config file") {
		t.Fatalf("huge file: %v", err)
	}
	if _, err := Load(dir, true, sections); err == nil || !strings.HasPrefix(err.Error(), dir+": ") {
		t.Fatalf("a directory: %v", err)
	}
}

// FuzzConfigFile: no input makes the parser panic or hang, every error names the file (and a
// line within it, when it has one), and a file that parses applies without panicking.
func FuzzConfigFile(f *testing.F) {
	for _, s := range []string{
		"up:\n  data-dir: /x\n  resync: 2s\n",
		"agent:\n  etcd: [a, b]\n",
		"up: {protect-all: true, keep-events: 3}\n",
		"controller:\n  x: &a [1]\n  y: *a\n",
		"up:\n  data-dir: [\n",
		"- a\n- b\n",
		"up:\n  resync: 30\n",
		"up: !!binary aGVsbG8=\n",
		"? [a]\n: b\n",
		"up:\n  keep-events: 0x10\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := strings.Count(string(data), "\n") + 2
		check := func(err error) {
			if err == nil {
				return
			}
			var all []*Error
			var e *Error
			var es Errors
			switch {
			case errors.As(err, &es):
				all = es
			case errors.As(err, &e):
				all = []*Error{e}
			default:
				t.Fatalf("%T: %v", err, err)
			}
			for _, e := range all {
				if e.Path != "fuzz.yaml" || !strings.HasPrefix(e.Error(), "fuzz.yaml") {
					t.Fatalf("error does not name the file: %v", e)
				}
				if e.Line < 0 || e.Line > lines {
					t.Fatalf("line %d outside a %d-line file: %v", e.Line, lines, e)
				}
			}
		}
		file, err := Parse("fuzz.yaml", data, sections)
		check(err)
		if err != nil {
			return
		}
		for _, s := range sections {
			fs, _ := testFlags()
			check(file.Apply(s, fs, []string{"etcd"}, checks))
		}
	})
}
