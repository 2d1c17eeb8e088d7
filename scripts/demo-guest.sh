#!/usr/bin/env bash
# Define and start a tiny guest to try hass on: 32 MiB, no disk; KVM where libvirt can use it,
# else TCG (software emulation). It boots into the firmware and idles, which is all hass needs
# to protect it.
#
#   ./scripts/demo-guest.sh demo1      then: kill -9 $(cat /var/run/libvirt/qemu/demo1.pid)
set -euo pipefail
name="${1:-demo1}"
type=qemu
if [ -c /dev/kvm ] && virsh -c qemu:///system domcapabilities --virttype kvm >/dev/null 2>&1; then
  type=kvm
fi
xml=$(mktemp)
trap 'rm -f "$xml"' EXIT
cat >"$xml" <<XML
<domain type='${type}'>
  <name>${name}</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><memballoon model='none'/></devices>
</domain>
XML
virsh -c qemu:///system define "$xml"
virsh -c qemu:///system start "$name"
