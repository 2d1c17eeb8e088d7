package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/hassproject/hass/engine"
	"github.com/hassproject/hass/hypervisor"
)

// Directory is what the executor reads from the cluster's store: the stored domain
// definition (libvirt XML) of a protected VM, which a VM started on a host that does not
// have it defined (an evacuation, a relocation) is defined from first; and the URI at which
// another host's hypervisor takes live migrations.
type Directory interface {
	DomainXML(ctx context.Context, vm engine.VMID) (string, error)
	MigrationURI(ctx context.Context, host engine.HostID) (string, error)
}

// Carry is the executor, the only one: the daemon's agents and the simulator's both map
// orders onto a hypervisor driver through it. Orders are idempotent: starting a running
// domain or destroying a stopped one succeeds. defs may be nil where every VM is defined
// on its host already (and nothing is migrated).
func Carry(ctx context.Context, drv hypervisor.Driver, a engine.Action, defs Directory) error {
	name := string(a.VM)
	ignore := func(err error, allowed ...error) error {
		for _, e := range allowed {
			if errors.Is(err, e) {
				return nil
			}
		}
		return err
	}
	switch a.Kind {
	case engine.ActStart:
		err := drv.Start(ctx, name)
		if errors.Is(err, hypervisor.ErrNotFound) && defs != nil {
			xml, derr := defs.DomainXML(ctx, a.VM)
			if derr != nil {
				return fmt.Errorf("start %s: not defined on %s, and no stored definition: %w", name, a.Host, derr)
			}
			if derr := drv.Define(ctx, xml); derr != nil {
				return fmt.Errorf("start %s: define it on %s from its stored definition: %w", name, a.Host, derr)
			}
			err = drv.Start(ctx, name)
		}
		return ignore(err, hypervisor.ErrInvalidState)
	case engine.ActDestroy:
		return ignore(drv.Destroy(ctx, name), hypervisor.ErrInvalidState)
	case engine.ActShutdown:
		return drv.Shutdown(ctx, name)
	case engine.ActReboot:
		return drv.Reboot(ctx, name)
	case engine.ActReset:
		return drv.Reset(ctx, name)
	case engine.ActSuspend:
		return drv.Suspend(ctx, name)
	case engine.ActResume:
		return drv.Resume(ctx, name)
	case engine.ActDelete:
		if err := ignore(drv.Destroy(ctx, name), hypervisor.ErrInvalidState, hypervisor.ErrNotFound); err != nil {
			return err
		}
		return ignore(drv.Undefine(ctx, name), hypervisor.ErrNotFound)
	case engine.ActMigrate:
		if defs == nil || a.Target == "" {
			return fmt.Errorf("migrate %s: no destination host known", name)
		}
		uri, err := defs.MigrationURI(ctx, a.Target)
		if err != nil {
			return fmt.Errorf("migrate %s to %s: %w", name, a.Target, err)
		}
		return drv.Migrate(ctx, name, uri)
	case engine.ActFence:
		return errors.New("no fence device configured")
	}
	return fmt.Errorf("unknown action %s", a.Kind)
}

// Unreached says whether an executor's error means the hypervisor was never reached, so the
// order was not carried out at all.
func Unreached(err error) bool {
	return errors.Is(err, hypervisor.ErrNotConnected) || errors.Is(err, hypervisor.ErrClosed)
}
