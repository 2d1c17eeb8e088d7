#!/usr/bin/env bash
# Run hass for real on this host: installs and starts libvirtd and QEMU if they are missing
# (Debian's packages; needs root), builds hass, and runs `hass up` with an embedded etcd in
# /var/lib/hass, protecting every VM of this host. Extra arguments go to `hass up`.
#
#   sudo ./scripts/up.sh                      then, in another shell: go run ./cmd/hass vm list
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"
bash scripts/install-libvirt.sh
mkdir -p bin
go build -o bin/hass ./cmd/hass
echo "hass: API on unix:///run/hass/hass.sock (root, and group hass if it exists); try: bin/hass vm list, bin/hass events, bin/hass status" >&2
exec bin/hass up --data-dir "${HASS_DATA_DIR:-/var/lib/hass}" --protect-all "$@"
