package controller

import (
	"context"
	"slices"
	"strings"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/openstack/notify"
)

// Nova's operations as intent. A notification about an instance is taken to its libvirt
// domain by the instance's uuid (which is the domain's uuid), as the agents' inventories list
// it; what it means (package notify) is then told to the engine:
//   - a user's operation beginning (stop, start, reboot, delete, suspend, resume, pause, a
//     migration, an operator's evacuation) is an operation from OpenStack: hass expects its
//     effects and recovers nothing they explain; Nova carries it out, not hass;
//   - Nova's own power-state sync stopping an instance (no user behind it) is not an intent;
//   - an instance deleted is forgotten;
//   - a new instance whose metadata carries HA_Enabled=True (Masakari's convention) is
//     protected;
//   - a compute service forced down or disabled is noted in the event log.
// This is the intent half of hass under OpenStack; recovery through Nova is novaexec.go.

// NovaHAMetadata is the instance metadata key that asks for protection (Masakari's).
const NovaHAMetadata = "HA_Enabled"

// NovaNotification takes one of Nova's notifications in. Only the leading controller acts; a
// follower's answer is false (the notification should go back to the queue for the leader).
func (c *Controller) NovaNotification(ctx context.Context, n notify.Notification, self string) bool {
	m := notify.Interpret(n, notify.Options{Self: self})
	c.mu.Lock()
	leading := c.leading
	c.mu.Unlock()
	if !leading {
		return false
	}
	switch m.Kind {
	case notify.Nothing, notify.OpEnded, notify.OpFailed, notify.Moved:
		// What Nova did shows in libvirt's events and the hosts' lists.
		if n.EventType == "instance.power_off.start" && !m.User {
			c.log.Info("nova notification: not a user's intent", "event_type", n.EventType, "instance", m.VM, "why", m.Why)
			return true
		}
		c.log.Debug("nova notification", "event_type", n.EventType, "instance", m.VM, "meaning", m.Kind.String(), "why", m.Why)
		return true
	case notify.ServiceDown, notify.ServiceUp:
		c.log.Info("nova: compute service changed", "host", m.Host, "why", m.Why)
		return true
	}
	name, found := c.domainOfInstance(ctx, m.VM)
	if !found {
		c.log.Debug("nova notification for an instance no host lists yet", "event_type", n.EventType, "instance", m.VM)
		return true
	}
	switch m.Kind {
	case notify.Created:
		if !strings.EqualFold(m.Metadata[NovaHAMetadata], "true") {
			return true
		}
		ref := name
		if c.cfg.Nova != nil {
			ref = m.VM
		}
		if _, err := c.Protect(ctx, ref, api.ProtectRequest{}); err != nil {
			c.log.Warn("nova: cannot protect a new instance that asks for it", "instance", m.VM, "domain", name, "err", err)
		} else {
			c.log.Info("nova: protected a new instance ("+NovaHAMetadata+"=True)", "instance", m.VM, "domain", name)
		}
	case notify.OpStarted:
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.eng.Protected(engine.VMID(name)) {
			return true
		}
		if out := c.stepLocked(ctx, engine.Request{Op: m.Op, VM: engine.VMID(name), Source: engine.SrcOpenStack}); out.Err != nil {
			c.log.Warn("nova: the engine refused an operation from OpenStack", "instance", m.VM, "domain", name, "op", m.Op.String(), "err", out.Err)
		}
	case notify.Deleted:
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.eng.Protected(engine.VMID(name)) {
			c.stepLocked(ctx, engine.Unprotect{VM: engine.VMID(name)})
		}
	}
	return true
}

// domainOfInstance is the libvirt domain whose uuid is the instance's, as the hosts last
// listed them.
func (c *Controller) domainOfInstance(ctx context.Context, uuid string) (string, bool) {
	invs, err := c.st.Inventories(ctx)
	if err != nil {
		return "", false
	}
	hosts := make([]string, 0, len(invs))
	for h := range invs {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	for _, h := range hosts {
		for _, d := range invs[h].Domains {
			if strings.EqualFold(d.UUID, uuid) {
				return d.Name, true
			}
		}
	}
	return "", false
}
