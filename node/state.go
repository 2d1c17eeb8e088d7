package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hassproject/hass/agent"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/lifecycle"
)

// The agent's state file keeps, on the host, what the next agent process must know (see
// agent.Past): when the lease was last renewed and which lease it was (the next process
// keeps it if the store still has it), whether the agent had fenced the host, the
// cluster's members (a process that restarts cut off from the store counts its majority over
// them, not over itself alone, which would hold any fence back for good) and the protected
// VMs (what its first fence destroys, decided before the store is read).
//
// It is written to a temporary file renamed over the last, never fsynced: a process crash
// keeps the page cache, so the next process reads what this one wrote; a host crash or power
// loss may lose the last writes (or leave an empty file, read as damaged), but it also kills
// every VM of the host, so a stale or lost record there costs nothing.

// stateFile is the name of host's agent state file in dir (one per host name, so that
// agents sharing a directory never read each other's).
func stateFile(dir, host string) string {
	return filepath.Join(dir, "agent-"+host+".state")
}

// agentState is the file's content.
type agentState struct {
	Renewed time.Time `json:"renewed"`
	Fenced  bool      `json:"fenced"`
	Holding bool      `json:"holding,omitempty"` // holding back its fence (agent.Past)
	// Lease is the ID of the lease the agent held (0: none, or unknown): a process that
	// restarts keeps it if the store still has it (see Node.askLease).
	Lease     int64           `json:"lease,omitempty"`
	Members   []engine.HostID `json:"members,omitempty"`
	Protected []engine.VMID   `json:"protected,omitempty"`
	// Stops: who stopped each of the host's down domains, where libvirt cannot say
	// (agent.Past): shutdown-guest, shutdown-host, fenced, watchdog or own-stop.
	Stops map[engine.VMID]string `json:"stops,omitempty"`
}

// readState reads the state file. A missing file is a first start: past is nil, err too. A
// damaged one (or one that cannot be read) gives a Past whose last renewal and lease are
// unknown, with the error to log: the safe choice, since the lease the last process held
// may have expired and the controller be starting this host's VMs elsewhere; the agent
// fences once the store answers, or, while it does not, at once unless the majority rule
// holds it back (see "A restarted agent" in package agent).
func readState(path string) (past *agent.Past, st agentState, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, st, nil
	}
	if err == nil {
		err = json.Unmarshal(data, &st)
	}
	if err != nil {
		return &agent.Past{}, agentState{}, fmt.Errorf("the agent's state file %s is damaged: %w", path, err)
	}
	stops, err := parseStops(st.Stops)
	if err != nil {
		return &agent.Past{}, agentState{}, fmt.Errorf("the agent's state file %s is damaged: %w", path, err)
	}
	return &agent.Past{Renewed: st.Renewed, Fenced: st.Fenced, Holding: st.Holding, Stops: stops}, st, nil
}

// parseStops reads the state file's stops.
func parseStops(in map[engine.VMID]string) (map[engine.VMID]engine.Reason, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make(map[engine.VMID]engine.Reason, len(in))
	for vm, name := range in {
		r, ok := keptStop(name)
		if !ok {
			return nil, fmt.Errorf("stops: %s: %q is not a stop an agent keeps", vm, name)
		}
		out[vm] = r
	}
	return out, nil
}

// keptStop is the stop an agent keeps (lifecycle.KeptStop) named name.
func keptStop(name string) (engine.Reason, bool) {
	for r := engine.Reason(0); r < 64; r++ {
		if lifecycle.KeptStop(r) && r.String() == name {
			return r, true
		}
	}
	return 0, false
}

// stopNames is parseStops undone.
func stopNames(in map[engine.VMID]engine.Reason) map[engine.VMID]string {
	if len(in) == 0 {
		return nil
	}
	out := make(map[engine.VMID]string, len(in))
	for vm, r := range in {
		out[vm] = r.String()
	}
	return out
}

// writeState writes the state file: a temporary file in the same directory, renamed over
// the last (a reader sees the old content or the new, never a part).
func writeState(path string, st agentState) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// remember is env.Remember: it notes what to keep and wakes the keeper (the agent's calls
// hold n.mu and never wait on the disk). Callers hold n.mu.
func (n *Node) remember(p agent.Past) {
	n.past = p
	n.kick()
}

// kick wakes the keeper: what the state file keeps changed.
func (n *Node) kick() {
	select {
	case n.keep <- struct{}{}:
	default: // the keeper has a write pending: it takes the latest
	}
}

// keeper writes the state file whenever what it keeps changed, until ctx ends.
func (n *Node) keeper(ctx context.Context) {
	defer n.wg.Done()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.keep:
		}
		n.mu.Lock()
		st := agentState{Renewed: n.past.Renewed, Fenced: n.past.Fenced, Holding: n.past.Holding, Lease: int64(n.lease.ID), Members: slices.Clone(n.members), Stops: stopNames(n.past.Stops)}
		if st.Lease == 0 {
			st.Lease = int64(n.oldLease) // not yet asked about: kept for the next process
		}
		for v := range n.prot {
			st.Protected = append(st.Protected, v)
		}
		n.mu.Unlock()
		slices.Sort(st.Protected)
		err := writeState(n.statePath, st)
		switch {
		case err != nil && !failing:
			n.log.Error("cannot write the agent's state file: an agent process that restarts will not know when this one last renewed its lease or whether it fenced this host", "file", n.statePath, "err", err)
		case err == nil && failing:
			n.log.Info("the agent's state file is written again", "file", n.statePath)
		}
		failing = err != nil
	}
}
