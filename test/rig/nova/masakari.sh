#!/bin/bash
# Masakari (Debian 12's Zed packages: masakari 14.0.2, masakari-monitors 14.0.0), OpenStack's
# own VM-HA service, on the rig's Nova (aio.sh): the peer hass is measured against
# (test/rig/sidebyside_test.go, scripts/bench-masakari.sh). Adapted from the project's
# reference kit: masakari-api and masakari-engine run in the controller host beside Nova,
# a masakari-instancemonitor on each compute host against its own libvirtd.
#
# No keystone: masakari-api runs noauth2; masakari -> Nova goes through a tiny keystoneauth
# plugin (masakari/aio_ks_token.py: fixed endpoint and token); the monitors use keystoneauth's
# admin_token plugin. masakari/aio_masakari_launch.py works around a bug of Debian 12's
# package set (oslo.messaging's sanitized notification context: HTTP 500 on every call that
# notifies). masakari-hostmonitor needs pacemaker or consul, which the rig has not: a host
# failure is told to Masakari by the benchmark itself (an ideal host monitor).
#
#   masakari.sh install              apt packages (idempotent; root namespace)
#   masakari.sh configure            configs + db sync
#   masakari.sh start-control        masakari-api and masakari-engine, detached (controller host)
#   masakari.sh monitor HOST         masakari-instancemonitor for HOST, foreground (a boot service)
#   masakari.sh segment HOST...      segment "rig" (recovery auto) with these compute hosts
#   masakari.sh stop-engine          stop masakari-engine only
#   masakari.sh stop                 stop api and engine
#
# Env: MK_DIR (default /var/tmp/hass-masakari), NOVA_IP (the controller host's address),
#      WAIT_AFTER_SERVICE_UPDATE (default 180, Masakari's), DUP_INTERVAL (default 180, Masakari's).
set -euo pipefail
MK=${MK_DIR:-/var/tmp/hass-masakari}
IP=${NOVA_IP:?NOVA_IP}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WAIT_AFTER_SERVICE_UPDATE=${WAIT_AFTER_SERVICE_UPDATE:-180}
DUP_INTERVAL=${DUP_INTERVAL:-180}
PY=/usr/bin/python3
API=http://$IP:15868/v1
log(){ echo "[$(date +%T)] masakari: $*" >&2; }
export PYTHONPATH=$MK/lib

cmd_install(){
  [ -x /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  dpkg -s masakari-api masakari-engine masakari-instance-monitor python3-masakari python3-masakari-monitors >/dev/null 2>&1 || \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      masakari-api masakari-engine masakari-instance-monitor python3-masakari python3-masakari-monitors >/dev/null
  mkdir -p $MK/{etc,state,logs,run,lib}
  cp -r $HERE/masakari/aio_ks_token.py $HERE/masakari/aio_ks_token-0.1.dist-info $HERE/masakari/aio_masakari_launch.py $MK/lib/
}

cmd_configure(){
  mkdir -p $MK/{etc,state,logs,run,lib} $MK/state/lock
  cp /etc/masakari/api-paste.ini $MK/etc/api-paste.ini
  cat > $MK/etc/masakari.conf <<EOF
[DEFAULT]
auth_strategy = noauth2
transport_url = rabbit://guest:guest@$IP:5672/
masakari_api_listen = $IP
masakari_api_listen_port = 15868
masakari_api_workers = 1
api_paste_config = $MK/etc/api-paste.ini
log_dir = $MK/logs
state_path = $MK/state
os_privileged_user_name = admin
os_privileged_user_password = admin:admin
os_privileged_user_tenant = admin
os_privileged_user_auth_url = http://$IP:8774/v2.1
wait_period_after_service_update = $WAIT_AFTER_SERVICE_UPDATE
duplicate_notification_detection_interval = $DUP_INTERVAL
[database]
connection = sqlite:///$MK/state/masakari.sqlite
[keystone_authtoken]
auth_type = aio_admin_token
[oslo_concurrency]
lock_path = $MK/state/lock
[oslo_messaging_notifications]
driver = noop
EOF
  rm -f $MK/state/masakari.sqlite
  masakari-manage --config-file $MK/etc/masakari.conf db sync >/dev/null 2>&1
}

monitor_conf(){ # HOST
  cat > $MK/etc/masakarimonitors-$1.conf <<EOF
[DEFAULT]
hostname = $1
log_dir = $MK/logs
[api]
auth_type = admin_token
endpoint = http://$IP:15868/v1
token = admin:admin
region = RegionOne
api_interface = public
[callback]
retry_max = 12
retry_interval = 10
[libvirt]
connection_uri = qemu:///system
EOF
}

alive(){ [ -f $MK/run/$1.pid ] && kill -0 $(cat $MK/run/$1.pid) 2>/dev/null; }
spawn(){ local name=$1; shift
  alive $name && return
  nohup "$@" > $MK/logs/$name.out 2>&1 < /dev/null &
  echo $! > $MK/run/$name.pid; log "started $name pid $!"; }

cmd_start_control(){
  spawn masakari-api $PY $MK/lib/aio_masakari_launch.py masakari.cmd.api --config-file $MK/etc/masakari.conf --log-file masakari-api.log
  spawn masakari-engine $PY $MK/lib/aio_masakari_launch.py masakari.cmd.engine --config-file $MK/etc/masakari.conf --log-file masakari-engine.log
  for _ in $(seq 120); do curl -s -o /dev/null http://$IP:15868/ && return 0; sleep 0.5; done
  log "masakari-api did not answer"; return 1
}

cmd_monitor(){ # HOST, in that host
  monitor_conf $1
  exec /usr/bin/masakari-instancemonitor --config-file $MK/etc/masakarimonitors-$1.conf --log-file masakari-instancemonitor-$1.log
}

mapi(){ local m=$1 p=$2; shift 2
  curl -sS -f -X $m -H 'X-Auth-Token: admin:admin' -H 'Content-Type: application/json' \
       -H 'OpenStack-API-Version: instance-ha 1.2' "$API$p" "$@"; }

cmd_segment(){
  local seg
  seg=$(mapi POST /segments -d '{"segment":{"name":"rig","recovery_method":"auto","service_type":"COMPUTE"}}' \
        | $PY -c 'import json,sys; print(json.load(sys.stdin)["segment"]["uuid"])')
  for h in "$@"; do
    mapi POST /segments/$seg/hosts -d '{"host":{"name":"'$h'","type":"COMPUTE","control_attributes":"SSH"}}' >/dev/null
  done
  echo $seg > $MK/state/segment_id
  log "segment $seg with $*"
}

cmd_stop(){ stop_these masakari-engine masakari-api; }

stop_these(){
  local n p
  for n in "$@"; do
    [ -f $MK/run/$n.pid ] || continue
    p=$(cat $MK/run/$n.pid)
    kill -TERM $p 2>/dev/null || true
    for _ in $(seq 20); do kill -0 $p 2>/dev/null || break; sleep 0.25; done
    kill -KILL $p 2>/dev/null || true
    pkill -KILL -P $p 2>/dev/null || true
    rm -f $MK/run/$n.pid
  done
}

case "${1:-}" in
  install) cmd_install;; configure) cmd_configure;; start-control) cmd_start_control;;
  monitor) shift; cmd_monitor "$@";; segment) shift; cmd_segment "$@";; stop) cmd_stop;;
  stop-engine) stop_these masakari-engine;;
  *) echo "usage: $0 install|configure|start-control|monitor HOST|segment HOST...|stop" >&2; exit 2;;
esac
