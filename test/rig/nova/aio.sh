#!/bin/bash
# A real OpenStack Nova (Debian 12's Zed packages, nova 26.2.2) on the rig, for hass's
# OpenStack tests. Adapted from the project's reference kit (an all-in-one on one libvirtd):
# here the control plane runs inside one rig host (the "controller node") and each compute
# host runs its own nova-compute against its own libvirtd, so a compute host's power loss is
# a real one (IPMI power-off of its namespace).
#
# Control plane (run inside the controller host, listening on NOVA_IP): RabbitMQ, SQLite,
# placement, glance, nova-api (noauth2), nova-conductor, nova-scheduler, and a tiny stand-in
# for neutron that answers "no ports" (the only part that is not real: Nova boots with
# "networks": "none" but asks neutron on delete and evacuate). No keystone: Nova's noauth2,
# requests carry X-Auth-Token user:project (user "admin" is admin).
#
#   aio.sh install                 apt packages + venv + paste files (idempotent; root namespace)
#   aio.sh configure               configs, SQLite databases (idempotent)
#   aio.sh start-control           start the control plane, detached (in the controller host)
#   aio.sh compute HOST IP         run nova-compute HOST in the foreground (in that host: a boot service)
#   aio.sh wait-computes N         wait until N computes are up and mapped to cell1
#   aio.sh seed                    the test image (a boot sector that halts) and flavor
#   aio.sh stop                    stop the control plane (by pid file)
#
# Env: AIO_DIR (default /var/tmp/hass-nova), NOVA_IP (the controller host's address).
set -euo pipefail
S=${AIO_DIR:-/var/tmp/hass-nova}
IP=${NOVA_IP:?NOVA_IP: the address the control plane listens on}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
V=$S/venv/bin
PY=$V/python
NOVA=http://$IP:8774/v2.1
GLANCE=http://$IP:9292
log(){ echo "[$(date +%T)] aio: $*" >&2; }

APT_PKGS="python3-nova python3-placement python3-glance python3-libvirt rabbitmq-server sudo curl"

cmd_install(){
  mkdir -p $S/{etc,state,logs,run,bin,debs}
  local t0=$SECONDS
  # policy-rc.d (exit 101) keeps rabbitmq-server's postinst from starting the system's broker.
  [ -x /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  if ! dpkg -s python3-nova python3-placement python3-glance python3-libvirt rabbitmq-server sudo >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends $APT_PKGS >/dev/null ||
      { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $APT_PKGS >/dev/null; }
  fi
  # A venv on Debian's python, so that it sees the packaged OpenStack libraries.
  [ -x $PY ] || /usr/bin/python3 -m venv --system-site-packages --without-pip $S/venv
  # Console scripts: Debian ships them only in the service packages (whose postinsts want
  # debconf, init scripts and a libvirtd of their own).
  mk(){ local name=$1 mod=${2%%:*} fn=${2##*:}
    printf '#!%s\nimport sys\nfrom %s import %s\nif __name__ == "__main__":\n    sys.exit(%s())\n' "$PY" "$mod" "$fn" "$fn" > $V/$name
    chmod +x $V/$name; }
  mk nova-api-os-compute nova.cmd.api_os_compute:main
  mk nova-conductor nova.cmd.conductor:main
  mk nova-scheduler nova.cmd.scheduler:main
  mk nova-manage nova.cmd.manage:main
  mk glance-api glance.cmd.api:main
  mk glance-manage glance.cmd.manage:main
  mk placement-manage placement.cmd.manage:main
  if [ ! -f $S/debs/extract/usr/share/nova-common/api-paste.ini ]; then
    (cd $S/debs && apt-get download -q nova-common glance-common >/dev/null && for f in *.deb; do dpkg-deb -x "$f" extract; done)
  fi
  cp $HERE/lib/*.py $S/bin/
  cp $HERE/lib/aio_nova_noauth.py $HERE/lib/aio_sqlite_immediate.py $S/venv/lib/python3.11/site-packages/
  echo 'import aio_sqlite_immediate' > $S/venv/lib/python3.11/site-packages/aio_sqlite_immediate.pth
  log "install done in $((SECONDS-t0))s"
}

# nova_conf FILE HOST MY_IP: one nova.conf (the control plane's, or a compute's). The SQLite
# databases wait up to 30 s for a lock (timeout=30) rather than fail at once with "database is
# locked" when several services write at the same time.
nova_conf(){
  local f=$1 host=$2 my=$3
  mkdir -p $S/state/$host/{instances,lock}
cat > $f <<EOF
[DEFAULT]
host = $host
my_ip = $my
state_path = $S/state/$host
instances_path = $S/instances
log_dir = $S/logs
debug = false
transport_url = rabbit://guest:guest@$IP:5672/
compute_driver = libvirt.LibvirtDriver
enabled_apis = osapi_compute
osapi_compute_listen = $IP
osapi_compute_listen_port = 8774
osapi_compute_workers = 1
heal_instance_info_cache_interval = -1
report_interval = 10
service_down_time = 60
vif_plugging_is_fatal = false
vif_plugging_timeout = 0
shutdown_timeout = 0
cpu_allocation_ratio = 16.0
ram_allocation_ratio = 1.5
reserved_host_memory_mb = 0
[workarounds]
disable_rootwrap = true
[wsgi]
api_paste_config = $S/etc/nova-api-paste.ini
[api]
auth_strategy = noauth2
[api_database]
connection = sqlite:///$S/state/nova_api.sqlite?timeout=30
[database]
connection = sqlite:///$S/state/nova_cell1.sqlite?timeout=30
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 5
[filter_scheduler]
enabled_filters = ComputeFilter,ComputeCapabilitiesFilter,ImagePropertiesFilter
[oslo_concurrency]
lock_path = $S/state/$host/lock
[notifications]
notification_format = versioned
notify_on_state_change = vm_and_task_state
[oslo_messaging_notifications]
driver = messagingv2
[placement]
auth_type = admin_token
endpoint = http://$IP:8778
token = admin:admin
endpoint_override = http://$IP:8778
[glance]
endpoint_override = http://$IP:9292
[neutron]
auth_type = admin_token
endpoint = http://$IP:9696
token = admin:admin
endpoint_override = http://$IP:9696
[libvirt]
virt_type = qemu
connection_uri = qemu:///system
cpu_mode = none
inject_partition = -2
wait_soft_reboot_seconds = 5
# Live migration between the computes, each with its own disks: over TCP to the other
# host's libvirtd (the rig's libvirtds listen on it), the disks copied along (block migration,
# "auto" in the API). Nova takes the instance directory to be at the same path on every
# compute: cmd_compute mounts the host's own there, in its mount namespace.
live_migration_scheme = tcp
live_migration_inbound_addr = $my
[oslo_policy]
policy_file = $S/etc/nova-policy.yaml
[vnc]
enabled = false
[spice]
enabled = false
[nova_sys_admin]
helper_command = sudo privsep-helper --config-file $f
EOF
}

cmd_configure(){
  rm -rf $S/state/*/instances # an earlier run's instances
  mkdir -p $S/{etc,state,logs,run} $S/state/glance-images
  # An operator: an admin who is not hass (whose own requests hass tells by its user). Under
  # noauth2 only the user "admin" is an admin, so the policy lets "operator" live-migrate.
  echo '"os_compute_api:os-migrate-server:migrate_live": "is_admin:True or user_id:operator"' > $S/etc/nova-policy.yaml
  nova_conf $S/etc/nova.conf control $IP
  sed "s#/etc/nova/healthcheck_disable#$S/etc/nova-healthcheck_disable#" \
      $S/debs/extract/usr/share/nova-common/api-paste.ini > $S/etc/nova-api-paste.ini
  # noauth2, then the token copied into the request context (lib/aio_nova_noauth.py)
  sed -i 's/ noauth2 osapi_compute_app_v21/ noauth2 ctxtoken osapi_compute_app_v21/; s/ noauth2 legacy_v2_compatible/ noauth2 ctxtoken legacy_v2_compatible/' $S/etc/nova-api-paste.ini
  printf '\n[filter:ctxtoken]\npaste.filter_factory = aio_nova_noauth:ContextToken.factory\n' >> $S/etc/nova-api-paste.ini
  sed "s#/etc/glance/healthcheck_disable#$S/etc/glance-healthcheck_disable#" \
      $S/debs/extract/usr/share/glance-common/glance-api-paste.ini > $S/etc/glance-api-paste.ini
  cat > $S/etc/placement.conf <<EOF
[DEFAULT]
log_dir = $S/logs
log_file = placement-api.log
[api]
auth_strategy = noauth2
[placement_database]
connection = sqlite:///$S/state/placement.sqlite?timeout=30
EOF
  cat > $S/etc/glance-api.conf <<EOF
[DEFAULT]
bind_host = $IP
bind_port = 9292
workers = 1
log_dir = $S/logs
[database]
connection = sqlite:///$S/state/glance.sqlite?timeout=30
[paste_deploy]
config_file = $S/etc/glance-api-paste.ini
flavor =
[glance_store]
stores = file
default_store = file
filesystem_store_datadir = $S/state/glance-images/
[oslo_concurrency]
lock_path = $S/state/control/lock
EOF
  mkdir -p $S/rabbitmq/{mnesia,log,home}
  cat > $S/rabbitmq/rabbitmq.conf <<EOF
listeners.tcp.1 = $IP:5672
loopback_users = none
log.file.level = warning
EOF
  echo '[].' > $S/rabbitmq/enabled_plugins
  cat > $S/rabbitmq/env.sh <<EOF
export HOME=$S/rabbitmq/home
export RABBITMQ_NODENAME=hass-nova@localhost
export RABBITMQ_CONFIG_FILE=$S/rabbitmq/rabbitmq.conf
export RABBITMQ_MNESIA_BASE=$S/rabbitmq/mnesia
export RABBITMQ_LOG_BASE=$S/rabbitmq/log
export RABBITMQ_PID_FILE=$S/rabbitmq/rabbit.pid
export RABBITMQ_ENABLED_PLUGINS_FILE=$S/rabbitmq/enabled_plugins
export RABBITMQ_DIST_PORT=25679
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
  local t0=$SECONDS
  # Fresh databases are kept in $S/pristine and copied from there on the next run (a db
  # sync takes half a minute), as long as this script and Nova's version are the same.
  local key; key=$( (cat "$0"; dpkg-query -W python3-nova python3-placement python3-glance) | sha1sum)
  if [ -f $S/pristine/key ] && [ "$(cat $S/pristine/key)" = "$key" ] && [ ! -f $S/state/nova_api.sqlite ]; then
    rm -f $S/state/*.sqlite-wal $S/state/*.sqlite-shm # a killed run's: never replayed into fresh ones
    cp $S/pristine/*.sqlite $S/state/
    log "configured from fresh databases kept in $S/pristine"
    return
  fi
  $V/placement-manage --config-file $S/etc/placement.conf db sync
  $V/nova-manage --config-file $S/etc/nova.conf api_db sync
  $V/nova-manage --config-file $S/etc/nova.conf cell_v2 map_cell0 \
      --database_connection "sqlite:///$S/state/nova_cell0.sqlite?timeout=30"
  $V/nova-manage --config-file $S/etc/nova.conf db sync
  $V/nova-manage --config-file $S/etc/nova.conf cell_v2 list_cells | grep -q ' cell1 ' || \
    $V/nova-manage --config-file $S/etc/nova.conf cell_v2 create_cell --name cell1
  $V/glance-manage --config-file $S/etc/glance-api.conf db_sync >/dev/null 2>&1
  # Write-ahead logging: readers no longer block writers (the "database is locked" errors
  # seen under load with the default rollback journal). It is kept in the files.
  for db in $S/state/*.sqlite; do
    $PY -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute("PRAGMA journal_mode=WAL"); c.close()' "$db"
  done
  rm -rf $S/pristine && mkdir -p $S/pristine && cp $S/state/*.sqlite $S/pristine/ && echo "$key" > $S/pristine/key
  log "configured (db sync $((SECONDS-t0))s)"
}

alive(){ [ -f $S/run/$1.pid ] && kill -0 $(cat $S/run/$1.pid) 2>/dev/null; }
spawn(){ local name=$1; shift
  alive $name && return
  nohup "$@" > $S/logs/$name.out 2>&1 < /dev/null &
  echo $! > $S/run/$name.pid; log "started $name pid $!"; }
wait_http(){ for _ in $(seq 240); do curl -s -o /dev/null "$1" && return 0; sleep 0.5; done; log "timeout waiting for $1"; return 1; }
napi(){ local m=$1 p=$2; shift 2
  curl -sf -X $m -H 'X-Auth-Token: admin:admin' -H 'X-OpenStack-Nova-API-Version: 2.60' \
       -H 'Content-Type: application/json' "$NOVA$p" "$@"; }

cmd_start_control(){
  local t0=$SECONDS
  if ! alive rabbitmq; then
    ( . $S/rabbitmq/env.sh; /usr/lib/rabbitmq/bin/rabbitmq-server -detached
      /usr/lib/rabbitmq/bin/rabbitmqctl -q wait --timeout 120 $S/rabbitmq/rabbit.pid )
    cp $S/rabbitmq/rabbit.pid $S/run/rabbitmq.pid
  fi
  spawn neutron-stub $PY $S/bin/neutron-stub.py 9696 $IP
  OS_PLACEMENT_CONFIG_DIR=$S/etc spawn placement-api $PY $S/bin/wsgi-serve.py $IP 8778 placement.wsgi:init_application
  spawn glance-api $V/glance-api --config-file $S/etc/glance-api.conf
  spawn nova-conductor $V/nova-conductor --config-file $S/etc/nova.conf
  spawn nova-scheduler $V/nova-scheduler --config-file $S/etc/nova.conf
  spawn nova-api $V/nova-api-os-compute --config-file $S/etc/nova.conf
  wait_http http://$IP:8778/; wait_http $GLANCE/; wait_http http://$IP:8774/
  log "control plane up in $((SECONDS-t0))s"
}

cmd_compute(){ # HOST MY_IP: nova-compute in the foreground (a boot service of that rig host)
  local host=${1:?HOST} my=${2:?IP}
  nova_conf $S/etc/nova-$host.conf $host $my
  # This host's own instance directory at the path every compute uses (the rig host's mount
  # namespace is private: the mount is seen by this host's nova-compute, libvirtd and QEMU).
  mkdir -p $S/instances
  mountpoint -q $S/instances || mount --bind $S/state/$host/instances $S/instances
  exec $PY $S/bin/compute-launch.py $host --config-file $S/etc/nova-$host.conf
}

cmd_wait_computes(){
  local want=${1:?N} n
  for _ in $(seq 180); do
    n=$(napi GET '/os-services?binary=nova-compute' | $PY -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin)["services"] if s["state"]=="up"))' 2>/dev/null || echo 0)
    [ "$n" -ge "$want" ] && break; sleep 1; done
  $V/nova-manage --config-file $S/etc/nova.conf cell_v2 discover_hosts >/dev/null 2>&1 || true
  for _ in $(seq 120); do
    n=$(napi GET /os-hypervisors | $PY -c 'import json,sys; print(len(json.load(sys.stdin)["hypervisors"]))' 2>/dev/null || echo 0)
    [ "$n" -ge "$want" ] && { log "$want computes up and mapped"; return 0; }; sleep 1; done
  log "only $n of $want computes up"; return 1
}

cmd_seed(){
  # A 1 MiB raw disk whose boot sector is "cli; hlt; jmp $-2": QEMU runs, the guest idles.
  [ -f $S/state/halt.img ] || $PY - "$S/state/halt.img" <<'EOF'
import sys
d = bytearray(1024 * 1024); d[0:4] = b'\xfa\xf4\xeb\xfd'; d[510:512] = b'\x55\xaa'
open(sys.argv[1], 'wb').write(d)
EOF
  local img
  img=$(curl -sf "$GLANCE/v2/images?name=halt&visibility=community" | $PY -c 'import json,sys; i=json.load(sys.stdin)["images"]; print(i[0]["id"] if i else "")')
  if [ -z "$img" ]; then
    img=$(curl -sf -X POST $GLANCE/v2/images -H 'Content-Type: application/json' \
      -d '{"name":"halt","disk_format":"raw","container_format":"bare","visibility":"community","os_shutdown_timeout":"0"}' \
      | $PY -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    curl -sf -X PUT $GLANCE/v2/images/$img/file -H 'Content-Type: application/octet-stream' --data-binary @$S/state/halt.img
  fi
  echo $img > $S/state/image_id
  napi GET /flavors/tiny >/dev/null 2>&1 || \
    napi POST /flavors -d '{"flavor":{"name":"tiny","ram":64,"vcpus":1,"disk":1,"id":"tiny"}}' >/dev/null
  log "image $img, flavor tiny"
}

cmd_stop(){
  local n p pids=""
  for n in nova-api nova-scheduler nova-conductor glance-api placement-api neutron-stub; do
    [ -f $S/run/$n.pid ] || continue
    p=$(cat $S/run/$n.pid)
    kill -0 $p 2>/dev/null && { kill -TERM $p; pids="$pids $p"; }
    rm -f $S/run/$n.pid
  done
  for _ in $(seq 40); do
    local alive=""; for p in $pids; do kill -0 $p 2>/dev/null && alive="$alive $p"; done
    pids=$alive; [ -z "$pids" ] && break; sleep 0.25
  done
  for p in $pids; do kill -KILL $p 2>/dev/null || true; done
  if alive rabbitmq; then
    ( . $S/rabbitmq/env.sh; /usr/lib/rabbitmq/bin/rabbitmqctl -q shutdown >/dev/null 2>&1 || kill $(cat $S/run/rabbitmq.pid) )
  fi
  rm -f $S/run/rabbitmq.pid
}

case "${1:-}" in
  install) cmd_install;; configure) cmd_configure;; start-control) cmd_start_control;;
  compute) shift; cmd_compute "$@";; wait-computes) shift; cmd_wait_computes "$@";;
  seed) cmd_seed;; stop) cmd_stop;;
  *) echo "usage: $0 install|configure|start-control|compute HOST IP|wait-computes N|seed|stop" >&2; exit 2;;
esac
