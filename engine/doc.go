// Package engine is hass's decision core: it holds, for every protected VM, what the user
// wants (desired state and the operation in flight), what the agents observed, and the
// failure being recovered, and turns inputs into actions:
//
//	out := e.Step(now, input)   // out.Actions to carry out, out.Log for the event log
//
// It never does I/O and never reads a clock: time is an input, so the controller, the
// simulator and the tests run the very same code and a scenario replays exactly. Callers
// record out.Actions before carrying them out, and call Current right before executing one,
// so an action overtaken by a newer user intent is dropped (a fencing token).
//
// # Glossary
//
//	home      the host a VM is meant to run on; migrations and relocations move it
//	desired   running, paused (suspended), stopped, or absent (deleted)
//	op        a user operation in flight: start shutdown stop reboot delete migrate suspend resume
//	obs       the newest (state, reason, seq) an agent reported for a VM on one host
//	seq       an agent's stamp, increasing per host: an older stamp is stale and dropped
//	gen       a VM's intent generation, bumped by every user intent; actions carry it
//	failure   a detected fault being recovered: kind, attempts, next attempt time
//	fenced    a host whose lease expired and that is known to run nothing any more
//
// # Classification
//
// Evaluation is level-triggered: after any input, each touched VM's newest home observation
// is compared with its desired state and its operation in flight. Events make it fast; the
// periodic resync (a Snapshot) makes it correct, so a lost event costs latency, never a wrong
// verdict. The rules, in the order they are tried:
//
//	observed on home            | desired       | in flight           | verdict
//	----------------------------+---------------+---------------------+----------------------------------
//	anything, home host suspect | any           | any                 | unknown: wait for the fence
//	anything, home host fenced  | running/paused| -                   | failure host-down: relocate
//	obs older than known (seq)  | any           | any                 | stale: dropped
//	running                     | running       | failure             | recovered
//	running                     | stopped       | none                | start behind hass's back: desired=running
//	running                     | paused        | none                | resume behind hass's back: desired=running
//	running (guest hung)        | running       | failure guest-hang  | reset it
//	paused/io-error             | running       | -                   | failure io-error: alert, no restart
//	paused/watchdog             | running       | -                   | failure guest-hang: reset
//	paused/user                 | running       | none                | suspend behind hass's back: desired=paused
//	absent/undefined            | any           | not a delete        | deleted behind hass's back: forget
//	down                        | stopped       | any                 | expected (the user's wish)
//	down, any reason            | any           | failure             | keep recovering (never a user act)
//	down/failed|crashed|panicked| running/paused| any op              | failure (a crash during an op is still a crash)
//	  |watchdog|fenced          |               |                     |
//	down                        | running/paused| start/reboot/resume | expected until the op's deadline; then a
//	                            |               |                     |   failure, unless it went down on purpose
//	                            |               |                     |   (shutdown, destroy): the rows below apply
//	down/migrated               | running/paused| migrate             | expected until the destination reports it;
//	                            |               |                     |   runs nowhere only once every other live
//	                            |               |                     |   host listed its domains after the
//	                            |               |                     |   switch-over (see Migrations)
//	shutoff/destroyed           | running/paused| none                | stop behind hass's back: desired=stopped
//	shutoff/shutdown-host       | running/paused| none                | shutdown behind hass's back: desired=stopped
//	shutoff/shutdown-guest      | running/paused| none                | policy honour: desired=stopped; restart: failure
//	shutoff/shutdown (unknown)  | running/paused| none                | honoured; alert when the policy says restart
//	shutoff/migrated            | running/paused| none                | migrate behind hass's back: wait for the destination
//	absent/unknown              | any           | none                | vanished: wait VanishGrace, then forget
//	shutoff/unknown             | running/paused| none                | failure vm-crash (e.g. after a host reset)
//
// Off home: a VM seen running on another host with reason "migrated", or as the target of a
// migration in flight, moves its home there (a recovery start on its way elsewhere is voided
// by a new generation); one seen running elsewhere while its home copy is known down was
// started there by a user and moves home too (hass's own orders to the old home are voided
// likewise); one seen up elsewhere while its home copy is up is a second copy (see Two
// copies). A migrated-away VM that fails at its destination before hass heard it landed is
// adopted there and recovered.
//
// # Migrations
//
// libvirt starts a migration's incoming copy paused on the destination when the migration
// begins, and at the switch-over resumes it as the source stops. So a list of the
// destination's domains taken during the migration shows a paused copy that is about to run:
// it proves nothing about where the VM runs after the switch-over. When the source is seen
// stopped by a migration and no live host reports the VM running, hass concludes that it
// "migrated away but runs nowhere" (and restarts it) only when every other host is fenced or
// has sent a complete domain list taken more than a second (clock skew) after the
// switch-over, the moment the source was first seen stopped, and none of them runs it. Until
// then it waits: the destination's resume event, the migration's result, or the next resync
// (every 30 s) says where the VM went. A lost event, a destination agent that restarts, or a
// resync racing the switch-over costs that wait, never a second copy.
//
// Likewise, when the home host of a VM is lost while another live host's newest report
// shows an incoming copy of it, the migration may have switched over before the loss: the VM
// is not started anywhere until that host lists its domains after the loss (it runs there:
// it is adopted; it is gone: it is evacuated). A copy that ran on the migration's target and
// then went down there (a crash, a user's destroy) is the VM's, even if the source's stop was
// never heard. A source that stopped by migrating is not stopped: a user's stop, shutdown,
// delete or suspend in flight follows the VM to its new home, and a start, reboot or resume
// that failed because the VM migrated away is no failure.
//
// # Two copies
//
// When a VM is seen up (running, or paused other than as an incoming migration copy) on two
// live hosts at once, two guests write to one disk. hass keeps the copy that carries the
// guest's live state: a copy that arrived by live migration holds the guest's memory, while
// a copy booted from disk holds nothing that is not on the disk; when only one of the two
// arrived by migration, that one is kept (and becomes home). Otherwise hass cannot tell, and
// keeps its home. The other copy is paused, not destroyed: a pause stops its disk writes at
// once and loses nothing, so even if hass kept the wrong one no state is lost. One alert
// says which copy was kept, why, and that the paused one waits for an operator to check and
// destroy or resume it; hass pauses it again only if the pause never took, and otherwise
// leaves it alone, however often it is reported, until it is seen gone. A report of the old
// source's copy taken before the switch-over (it arrives late) is not a second copy.
//
// # Operations
//
// An accepted Request bumps the VM's generation, records the operation with a deadline, and
// orders the matching action (start, shutdown, destroy, reboot, delete, migrate, suspend,
// resume). It completes on an observation newer than the request; past its deadline a
// shutdown is escalated to a destroy, and a start, reboot or resume that left the VM down is
// a failure (operation-failed). A stop, shutdown, delete or suspend not seen done by its
// deadline is tried again (InsistTries times, StartTimeout apart, said in the log, not as
// alerts); after that it has failed: the VM is in error with one alert, its desired state
// stays what the user asked (nothing restarts it), and hass leaves it to the user; the
// error ends when the VM is seen as the user wanted or the user asks again. A stop,
// shutdown or delete of a VM whose host is fenced is done: the fence proves the VM down (a
// deleted VM's definition stays on the dead host). Every operation thus ends. Operations
// from OpenStack order nothing: Nova acts itself.
//
// # Recovery
//
// A failure is restarted in place at once, then with exponential backoff (BackoffBase,
// doubling, up to BackoffMax) while fewer than Policy.MaxRestarts restarts fell in
// Policy.Window; then relocated to another host (up to Policy.MaxRelocations); then given
// up: the VM is in error, an alert is logged, and only a user's operation revives it.
// A host whose lease expired is suspect; it is fenced when an IPMI power-off is confirmed or
// when SelfFenceMargin has passed since expiry (its agent destroyed its VMs before the lease
// could expire). Only then are its VMs placed elsewhere, highest priority first; evacuation
// does not spend the VM's restart budget and does not wait for its restart backoff (host
// loss is not the VM's fault: a VM that crashed a minute ago leaves with its neighbours).
//
// Placement (a relocation, an evacuation, a start or migration with no host named, a
// maintenance move) is package placement's: feasibility checkers say no to a host with a
// reason (up, out of maintenance, not the host it leaves, the VM's cluster, no copy of the
// VM up there, memory, vCPUs, a spare only for a recovery, hard anti-affinity), rankers
// score what is left (its hypervisor reached, the VM did not fail there within its policy
// window, its soft anti-affinity group kept apart, a spare first for a recovery, the most
// free memory; the first name wins a tie). A host it failed on is used again only when no
// other has room. When nothing fits, VMStatus.Waiting says why in one line with numbers. A
// migration in flight counts against its target as well as its source.
//
// # Clusters, spares, admission, maintenance, power
//
// A VM belongs to the cluster of the host it was protected on, and every placement stays
// inside it (a user's migration to another cluster is refused). A reserved host (a spare)
// takes only recoveries, and recoveries go there first (Masakari's reserved_host, vSphere's
// failover hosts); a user's placement and a maintenance move never use one. A cluster's
// TolerateHostFailures is its admission control (admission.go): a Protect, or a user's start
// of a stopped VM, is refused with an *AdmissionError when the cluster's VMs could not all be
// restarted after losing that many hosts. Maintenance (maintenance.go) moves a host's
// running VMs away, holds their recovery and never fences the host. The BMC's power status
// (HostPower) fences a powered-off host at once; the lease ID a host was fenced with does
// not bring it back up (HostLease.Lease).
//
// A recovery action is recorded (in the log and the VM's state) before it is issued, carries
// an ID, and is retried when it fails or goes unanswered for StartTimeout; a user's stop or
// delete cancels it.
//
// An action whose executor could not reach the hypervisor at all (ActionResult.Unreached:
// no connection to libvirtd) was never carried out, so it is not the VM's failure: a
// recovery attempt gets back what it cost (the attempt, its restart stamp, its relocation,
// the move of the VM's home) and is issued again as soon as the host reports (a Snapshot, an
// observation, an action result that reached its hypervisor), or after UnreachedRetry; it
// alerts once per outage. A user operation whose action was unreached keeps its operation,
// and the action is issued again the same way.
//
// The naive detector (Config.Naive) keeps the same recovery but classifies any protected VM
// that is not running as failed, and trusts observations in arrival order. It exists to show,
// in the simulator, what operation awareness buys.
package engine
