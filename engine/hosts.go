package engine

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ---- hosts: registered, changed, removed, powered off ----------------------------------

func (e *Engine) addHost(in AddHost) {
	switch {
	case in.Host == "":
		e.out.Err = errors.New("add host: host name is empty")
		return
	case in.MemMiB < 0:
		e.out.Err = fmt.Errorf("add host %s: mem %d MiB must be >= 0", in.Host, in.MemMiB)
		return
	case in.VCPUs < 0:
		e.out.Err = fmt.Errorf("add host %s: vcpus %d must be >= 0", in.Host, in.VCPUs)
		return
	}
	cl := in.Cluster
	if cl == "" {
		cl = DefaultCluster
	}
	if e.clusters[cl] == nil {
		e.out.Err = fmt.Errorf("add host %s: cluster %q: no such cluster (create it first)", in.Host, cl)
		return
	}
	if h := e.hosts[in.Host]; h != nil {
		if h.cluster != cl {
			if vs := e.homedHere(h, 3); len(vs) > 0 {
				e.out.Err = fmt.Errorf("add host %s: cluster %q: the host is in cluster %q and protected VMs live on it (%s): move them first",
					in.Host, cl, h.cluster, strings.Join(vs, ", "))
				return
			}
		}
		h.members = in.Members // the agent's news, not the operator's: not logged
		if h.mem != in.MemMiB || h.vcpus != in.VCPUs || h.fencing != in.Fencing || h.cluster != cl || h.reserved != in.Reserved {
			h.mem, h.vcpus, h.fencing, h.cluster, h.reserved = in.MemMiB, in.VCPUs, in.Fencing, cl, in.Reserved
			e.log(RecHost, "", in.Host, "updated %s", hostText(h))
		}
		return
	}
	h := &host{id: in.Host, mem: in.MemMiB, vcpus: in.VCPUs, fencing: in.Fencing, cluster: cl, reserved: in.Reserved, members: in.Members}
	e.insertHost(h)
	e.log(RecHost, "", in.Host, "added %s", hostText(h))
	e.checkMajority()
}

// hostText describes a host's registration. The fields that are not set say nothing, so
// a host of the default cluster reads as it always did.
func hostText(h *host) string {
	var b strings.Builder
	fmt.Fprintf(&b, "mem=%dMiB", h.mem)
	if h.vcpus > 0 {
		fmt.Fprintf(&b, " vcpus=%d", h.vcpus)
	}
	fmt.Fprintf(&b, " fencing=%t", h.fencing)
	if h.cluster != DefaultCluster {
		fmt.Fprintf(&b, " cluster=%s", h.cluster)
	}
	if h.reserved {
		b.WriteString(" reserved")
	}
	return b.String()
}

// insertHost adds a new host to the engine's maps and sorted lists.
func (e *Engine) insertHost(h *host) {
	e.hosts[h.id] = h
	i, _ := slices.BinarySearch(e.hostIx, h.id)
	e.hostGen++ // the VMs' related hosts are worked out again (relKey)
	e.hostIx = slices.Insert(e.hostIx, i, h.id)
	e.hostList = slices.Insert(e.hostList, i, h)
}

// homedHere names up to n protected VMs homed on h, sorted.
func (e *Engine) homedHere(h *host, n int) []string {
	var out []string
	for _, v := range h.related {
		if !v.dead && v.home == h.id {
			out = append(out, string(v.id))
		}
	}
	slices.Sort(out)
	if len(out) > n {
		out = append(out[:n], fmt.Sprintf("and %d more", len(out)-n))
	}
	return out
}

func (e *Engine) removeHost(in RemoveHost) {
	h := e.hosts[in.Host]
	if h == nil {
		e.out.Err = fmt.Errorf("remove host: unknown host %q", in.Host)
		return
	}
	if vs := e.homedHere(h, 3); len(vs) > 0 {
		e.out.Err = fmt.Errorf("remove host %s: protected VMs live on it (%s): migrate, delete or unprotect them first", h.id, strings.Join(vs, ", "))
		return
	}
	var busy []string
	for _, v := range h.related {
		if (v.fail != nil && v.fail.actID != 0 && v.fail.actHost == h.id) || (v.op != nil && v.op.Kind == OpMigrate && v.op.Target == h.id) {
			busy = append(busy, string(v.id))
		}
	}
	for v := range e.migrating {
		if v.op.Target == h.id && !slices.Contains(busy, string(v.id)) {
			busy = append(busy, string(v.id))
		}
	}
	if len(busy) > 0 {
		slices.Sort(busy)
		e.out.Err = fmt.Errorf("remove host %s: VMs are on their way to it (%s): wait for them to land", h.id, strings.Join(busy, ", "))
		return
	}
	// What the VMs related to it still remember of it goes: observations, extra copies, the
	// host of a recovery attempt that was answered.
	for _, v := range slices.Clone(h.related) {
		e.touch(v)
		if i := slices.IndexFunc(v.obs, func(o hostObs) bool { return o.host == h.id }); i >= 0 {
			v.obs = slices.Delete(v.obs, i, i+1)
		}
		v.dropDup(h.id)
		if f := v.fail; f != nil && f.actHost == h.id {
			f.actHost = ""
		}
	}
	e.setHostState(h, hostUp) // out of the suspects and the fenced count
	e.stopDraining(h)
	delete(e.hosts, h.id)
	i, _ := slices.BinarySearch(e.hostIx, h.id)
	e.hostGen++
	e.hostIx = slices.Delete(e.hostIx, i, i+1)
	e.hostList = slices.Delete(e.hostList, i, i+1)
	e.log(RecHost, "", h.id, "removed")
	e.checkMajority()
}

// hostPower handles the BMC's power status of a host.
func (e *Engine) hostPower(in HostPower) {
	h := e.hosts[in.Host]
	if h == nil {
		e.out.Err = fmt.Errorf("power: unknown host %q", in.Host)
		return
	}
	if !in.Off && h.maint && h.powerOff && h.state != hostFenced {
		// Powered on again (its agent not back yet): it may run what lands there.
		h.powerOff = false
		e.log(RecHost, "", h.id, "powered on (BMC) while in maintenance")
		e.checkMajority()
		return
	}
	if h.state == hostFenced {
		switch {
		case !in.Off && h.onAt.IsZero():
			h.onAt = e.now
			e.log(RecHost, "", h.id, "powered on (BMC) while fenced: a VM may land there until its agent fences and lists")
		case in.Off && !h.onAt.IsZero():
			h.onAt = time.Time{} // off again: whatever landed there runs no more
			e.log(RecHost, "", h.id, "powered off (BMC) again while fenced")
		}
		return
	}
	if !in.Off {
		return
	}
	if h.maint {
		if !h.powerOff {
			h.powerOff, h.offAt = true, e.now
			e.log(RecHost, "", h.id, "powered off (BMC) while in maintenance: not fenced, its VMs wait for maintenance to end")
			e.checkMajority()
		}
		return
	}
	if h.state == hostUp {
		// Its lease may run for a while yet: the power status is the better news.
		h.lostAt, h.lastSeen = e.now, e.now
	}
	e.fenced(h, "power off (BMC)")
}
