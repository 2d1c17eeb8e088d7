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
data="${HASS_DATA_DIR:-/var/lib/hass}"
echo "hass: API on unix:///run/hass/hass.sock (root, and group hass if it exists); its admin token is in $data/admin.token (root only)" >&2
if [ "$data" = /var/lib/hass ]; then
  echo "hass: try, as root: bin/hass vm list, bin/hass events, bin/hass status" >&2
else
  echo "hass: try, as root: HASS_TOKEN_FILE=$data/admin.token bin/hass vm list (the CLI looks in /var/lib/hass by default)" >&2
fi
exec bin/hass up --data-dir "$data" --protect-all "$@"
