#!/usr/bin/env bash
# Define and start a tiny guest to try hass on: 32 MiB, no disk, TCG (no KVM needed). It boots
# into the firmware and idles, which is all hass needs to protect it.
#
#   ./scripts/demo-guest.sh demo1      then: kill -9 $(cat /var/run/libvirt/qemu/demo1.pid)
set -euo pipefail
name="${1:-demo1}"
xml=$(mktemp)
trap 'rm -f "$xml"' EXIT
cat >"$xml" <<XML
<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><memballoon model='none'/></devices>
</domain>
XML
virsh -c qemu:///system define "$xml"
virsh -c qemu:///system start "$name"
