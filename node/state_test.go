package node

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/engine"
)

func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	path := stateFile(dir, "h1")
	if filepath.Base(path) != "agent-h1.state" {
		t.Fatalf("state file %s", path)
	}

	// Missing: a first start.
	past, _, err := readState(path)
	if past != nil || err != nil {
		t.Fatalf("missing file: past %+v, err %v; want nil, nil", past, err)
	}

	// Round trip.
	at := time.Date(2026, 1, 1, 0, 0, 7, 123456789, time.UTC)
	want := agentState{Renewed: at, Fenced: true, Holding: true, Lease: 0x694d9a2b1c3e4f50, Members: []engine.HostID{"h1", "h2"}, Protected: []engine.VMID{"v1"}, Killed: []engine.VMID{"v1"}}
	if err := writeState(path, want); err != nil {
		t.Fatal(err)
	}
	past, st, err := readState(path)
	if err != nil || past == nil || !past.Renewed.Equal(at) || !past.Fenced || !past.Holding || st.Lease != want.Lease ||
		!slices.Equal(st.Members, want.Members) || !slices.Equal(st.Protected, want.Protected) || !slices.Equal(past.Killed, want.Killed) {
		t.Fatalf("read back %+v %+v, err %v; want %+v", past, st, err, want)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("the temporary file stays: %v", err)
	}

	// Damaged (a host crash can leave it empty): the last renewal unknown, an error naming
	// the file.
	for _, data := range []string{"", "{\"renewed\": 12"} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		past, _, err = readState(path)
		if past == nil || !past.Renewed.IsZero() || past.Fenced || err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("damaged %q: past %+v, err %v; want an unknown renewal and an error naming the file", data, past, err)
		}
	}

	// A directory that cannot be written: an error, nothing else.
	if err := writeState(filepath.Join(dir, "missing", "agent-h1.state"), want); err == nil {
		t.Fatal("writing into a missing directory worked")
	}
}
