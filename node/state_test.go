package node

import (
	"context"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hassproject/hass/agent"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/store"
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
	want := agentState{Renewed: at, Fenced: true, Holding: true, Lease: 0x694d9a2b1c3e4f50, Members: []engine.HostID{"h1", "h2"}, Protected: []engine.VMID{"v1"}, Stops: map[engine.VMID]string{"v1": "fenced", "v2": "shutdown-guest"}}
	if err := writeState(path, want); err != nil {
		t.Fatal(err)
	}
	past, st, err := readState(path)
	if err != nil || past == nil || !past.Renewed.Equal(at) || !past.Fenced || !past.Holding || st.Lease != want.Lease ||
		!slices.Equal(st.Members, want.Members) || !slices.Equal(st.Protected, want.Protected) || !maps.Equal(past.Stops, map[engine.VMID]engine.Reason{"v1": engine.ReasonFenced, "v2": engine.ReasonShutdownGuest}) {
		t.Fatalf("read back %+v %+v, err %v; want %+v", past, st, err, want)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("the temporary file stays: %v", err)
	}

	// Damaged (a host crash can leave it empty): the last renewal unknown, an error naming
	// the file.
	for _, data := range []string{"", "{\"renewed\": 12", `{"renewed": "2026-01-01T00:00:07Z", "fenced": true, "stops": {"v1": "destroyed"}}`} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		past, _, err = readState(path)
		if past == nil || !past.Renewed.IsZero() || past.Fenced || err == nil || !strings.Contains(err.Error(), path) ||
			strings.Contains(data, "stops") && !strings.Contains(err.Error(), "stops: v1") {
			t.Fatalf("damaged %q: past %+v, err %v; want an unknown renewal and an error naming the file", data, past, err)
		}
	}

	// A directory that cannot be written: an error, nothing else.
	if err := writeState(filepath.Join(dir, "missing", "agent-h1.state"), want); err == nil {
		t.Fatal("writing into a missing directory worked")
	}
}

// TestKeeper: the keeper writes what the agent asks to keep, with the node's lease, members
// and protected VMs, and the next process reads it back; a directory it cannot write to
// gets an error in the log, and the keeper goes on (it never holds the agent up).
func TestKeeper(t *testing.T) {
	logs := &syncBuf{}
	dir := t.TempDir()
	n := &Node{statePath: stateFile(dir, "h1"), keep: make(chan struct{}, 1),
		log: slog.New(slog.NewTextHandler(logs, nil)), members: []engine.HostID{"h1", "h2"},
		prot: map[engine.VMID]bool{"v2": true, "v1": true}, lease: store.Lease{ID: 0x42}}
	ctx, cancel := context.WithCancel(context.Background())
	n.wg.Add(1)
	go n.keeper(ctx)
	defer func() { cancel(); n.wg.Wait() }()

	at := time.Date(2026, 1, 1, 0, 0, 7, 0, time.UTC)
	n.mu.Lock()
	n.remember(agent.Past{Renewed: at, Fenced: true, Stops: map[engine.VMID]engine.Reason{"v1": engine.ReasonFenced, "v2": engine.ReasonOwnStop}})
	n.mu.Unlock()
	var past *agent.Past
	var st agentState
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		past, st, err = readState(n.statePath)
		if err == nil && past != nil && past.Fenced {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the keeper did not write the state file within 10 s: %+v, %v", past, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !past.Renewed.Equal(at) || !maps.Equal(past.Stops, map[engine.VMID]engine.Reason{"v1": engine.ReasonFenced, "v2": engine.ReasonOwnStop}) ||
		st.Lease != 0x42 || !slices.Equal(st.Members, n.members) || !slices.Equal(st.Protected, []engine.VMID{"v1", "v2"}) {
		t.Fatalf("kept %+v %+v", past, st)
	}

	// Its directory gone: an error naming the file, and the keeper still answers.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	n.remember(agent.Past{Renewed: at.Add(time.Second)})
	n.mu.Unlock()
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "cannot write the agent's state file") {
		if time.Now().After(deadline) {
			t.Fatalf("no error logged within 10 s: %q", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), n.statePath) {
		t.Fatalf("the error does not name the file: %q", logs.String())
	}
}

// syncBuf is a log buffer the keeper writes while the test reads it.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
