package version

import (
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	vcs := []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}
	for _, tc := range []struct {
		name    string
		stamped string
		bi      *debug.BuildInfo
		ok      bool
		want    string
	}{
		{"stamped wins", "1.2.3", &debug.BuildInfo{Main: debug.Module{Version: "v9.9.9"}}, true, "1.2.3"},
		{"stamped is trimmed", " 1.2.3\n", nil, false, "1.2.3"},
		{"module version", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.3.0"}}, true, "v0.3.0"},
		{"devel with revision", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs}, true, "devel+0123456789ab-dirty"},
		{"devel, clean", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs[:1]}, true, "devel+0123456789ab"},
		{"no build info", "", nil, false, "devel"},
		{"nothing recorded", "", &debug.BuildInfo{}, true, "devel"},
	} {
		if got := resolve(tc.stamped, tc.bi, tc.ok); got != tc.want {
			t.Errorf("%s: resolve = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestStringUsesStamp(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	Version = "7.7.7-test"
	if got := String(); got != "7.7.7-test" {
		t.Fatalf("String() = %q with Version stamped", got)
	}
	Version = ""
	if got := String(); got == "" {
		t.Fatal("String() is empty without a stamp")
	}
}

// TestLdflagsStamp builds a program with the -ldflags this package's doc gives and checks
// that the stamp is what it prints: the documented variable path is the real one.
func TestLdflagsStamp(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not found: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "printversion")
	build := exec.Command(goTool, "build", "-o", bin, "-ldflags", "-X github.com/hassproject/hass/version.Version=9.8.7-ldflags", "./testdata/printversion")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != "9.8.7-ldflags" {
		t.Fatalf("stamped binary says %q", got)
	}
}
