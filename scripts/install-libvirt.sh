#!/usr/bin/env bash
# install-libvirt.sh — install and start libvirtd + QEMU (TCG) for hass tests.
#
# Designed for fresh Debian machines/containers without systemd or D-Bus.
# Idempotent: safe to run any number of times.
#   * skips apt when libvirtd, virtlogd, virsh and qemu-system-x86_64 exist
#   * creates users/groups/directories only when missing
#   * starts virtlogd/libvirtd only when they are not already running
#   * waits (bounded) until `virsh -c qemu:///system list` answers
#
# Env:
#   HASS_LIBVIRT_WAIT        seconds to wait for libvirtd to answer (default 60)
#   HASS_LIBVIRTD_SUBREAPER  1 = run libvirtd in the foreground under
#                            `tini -s` (installed if missing) instead of
#                            `libvirtd -d`. Use it where PID 1 reaps orphaned
#                            zombies lazily (e.g. some sandboxes/containers):
#                            libvirt only reports a dead QEMU once the zombie
#                            is reaped, so crash events are late by however
#                            long PID 1 takes (1.2-2s measured). See NOTES.md.
set -euo pipefail

WAIT_SECS="${HASS_LIBVIRT_WAIT:-60}"
URI="qemu:///system"

log() { echo "install-libvirt: $*" >&2; }
die() { echo "install-libvirt: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

have_all_binaries() {
    command -v libvirtd >/dev/null 2>&1 &&
    command -v virtlogd >/dev/null 2>&1 &&
    command -v virsh >/dev/null 2>&1 &&
    command -v qemu-system-x86_64 >/dev/null 2>&1 &&
    command -v qemu-img >/dev/null 2>&1
}

# libvirtd/virtlogd live in /usr/sbin, which may not be on PATH for non-login shells.
export PATH="$PATH:/usr/sbin:/sbin"

if have_all_binaries; then
    log "binaries already present, skipping apt"
else
    log "installing packages via apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends \
        libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients \
        qemu-system-x86 qemu-utils
    have_all_binaries || die "packages installed but binaries still missing"
fi

mkdir -p /var/log/libvirt /var/run/libvirt /var/lib/libvirt/qemu

getent group kvm >/dev/null 2>&1          || groupadd -r kvm
getent group libvirt-qemu >/dev/null 2>&1 || groupadd -r libvirt-qemu
id -u libvirt-qemu >/dev/null 2>&1        || useradd -r -g libvirt-qemu libvirt-qemu

# KVM where it works: libvirt runs QEMU as libvirt-qemu, which must be able to open /dev/kvm.
# Without that libvirt falls back to TCG *and* re-probes QEMU's capabilities at every domain
# start (about 1 s each). So: /dev/kvm belongs to group kvm, libvirt-qemu is in that group,
# and a libvirtd that started before the change is restarted. Where there is no /dev/kvm
# (e.g. inside a VM without nested virtualisation) guests run under TCG.
kvm_changed=0
if [ -c /dev/kvm ]; then
    if [ "$(stat -c %G /dev/kvm)" != kvm ]; then
        chgrp kvm /dev/kvm && chmod 0660 /dev/kvm && kvm_changed=1
    fi
    if ! id -nG libvirt-qemu | tr ' ' '\n' | grep -qx kvm; then
        usermod -a -G kvm libvirt-qemu && kvm_changed=1
    fi
    log "/dev/kvm present: guests can use KVM (libvirt-qemu in group kvm)"
else
    log "no /dev/kvm on this machine: guests run under TCG (software emulation)"
fi

# pidfile-based liveness check; falls back to pgrep -x (exact name, no -f), counting only
# processes in this mount namespace: a multi-host rig's libvirtds live in their own.
same_mntns() { [ "$(readlink "/proc/$1/ns/mnt" 2>/dev/null)" = "$(readlink /proc/self/ns/mnt)" ]; }
ours() {
    local p
    for p in $(pgrep -x "$1" 2>/dev/null); do
        same_mntns "$p" && echo "$p"
    done
}
running() {
    local name="$1" pidfile="/var/run/$1.pid" pid
    if [ -r "$pidfile" ]; then
        pid="$(cat "$pidfile" 2>/dev/null || true)"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            return 0
        fi
    fi
    [ -n "$(ours "$name")" ]
}

if [ "$kvm_changed" = 1 ] && running libvirtd; then
    log "restarting libvirtd so that it sees libvirt-qemu's new access to /dev/kvm"
    for p in $(ours libvirtd); do kill "$p" || true; done
    for _ in $(seq 1 50); do running libvirtd || break; sleep 0.2; done
fi

# libvirtd hands every guest's console log to virtlogd: without it no domain starts
# ("Failed to connect socket to '/run/libvirt/virtlogd-sock'"). There is no systemd socket
# activation here, so it is started by hand; a socket file left by a virtlogd that is gone
# is stale, and virtlogd replaces it.
if running virtlogd; then
    log "virtlogd already running"
else
    log "starting virtlogd"
    virtlogd -d
    for _ in $(seq 1 50); do running virtlogd && [ -S /var/run/libvirt/virtlogd-sock ] && break; sleep 0.1; done
    running virtlogd || die "virtlogd did not start (see /var/log/libvirt/)"
fi

if running libvirtd; then
    log "libvirtd already running"
else
    if [ "${HASS_LIBVIRTD_SUBREAPER:-0}" = 1 ]; then
        if ! command -v tini >/dev/null 2>&1; then
            log "installing tini"
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini ||
                { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini; }
        fi
        log "starting libvirtd under tini -s (systemd/D-Bus errors in its log are harmless)"
        setsid tini -s -- libvirtd </dev/null >>/var/log/libvirt/libvirtd-foreground.log 2>&1 &
    else
        log "starting libvirtd (systemd/D-Bus errors in its log are harmless)"
        libvirtd -d
    fi
fi

log "waiting up to ${WAIT_SECS}s for libvirtd to answer on ${URI}"
deadline=$(( $(date +%s) + WAIT_SECS ))
until virsh -c "$URI" list >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        virsh -c "$URI" list || true
        die "libvirtd did not answer on ${URI} within ${WAIT_SECS}s (see /var/log/libvirt/ and 'libvirtd -v' output)"
    fi
    sleep 0.5
done
log "libvirtd is ready: $(virsh -c "$URI" version --daemon 2>/dev/null | tr '\n' ' ')"
