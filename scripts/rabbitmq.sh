#!/usr/bin/env bash
# A RabbitMQ broker of the tests' own, on loopback only, as root, without systemd: Debian's
# rabbitmq-server (installed if missing), its data in DIR, listening on 127.0.0.1:PORT (AMQP,
# guest/guest), its node named hass-test-PORT@localhost so that it never meets another broker
# on this machine (an OpenStack all-in-one's, say).
#
#   scripts/rabbitmq.sh start DIR PORT [DIST_PORT]   start it and wait until it answers (prints its pid)
#   scripts/rabbitmq.sh stop DIR PORT [DIST_PORT]    stop it
#
# DIST_PORT is Erlang's distribution port (rabbitmqctl talks to the node there); by default
# PORT+20000, or PORT-20000 where that would pass 65535.
set -euo pipefail
cmd=${1:?start|stop} dir=${2:?DIR} port=${3:?PORT}
dist=${4:-$((port + 20000))}
[ "$dist" -le 65535 ] || dist=$((port - 20000))

if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  # policy-rc.d (exit 101) keeps the package's postinst from starting the system's broker.
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null; }
fi

mkdir -p "$dir"/{mnesia,log,home}
cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$port
loopback_users = none
log.file.level = warning
CONF
echo '[].' >"$dir/enabled_plugins"
export HOME="$dir/home"
export RABBITMQ_NODENAME="hass-test-$port@localhost"
export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
export RABBITMQ_MNESIA_BASE="$dir/mnesia"
export RABBITMQ_LOG_BASE="$dir/log"
export RABBITMQ_PID_FILE="$dir/rabbit.pid"
export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
export RABBITMQ_DIST_PORT=$dist
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
ctl=/usr/lib/rabbitmq/bin/rabbitmqctl

case "$cmd" in
start)
  /usr/lib/rabbitmq/bin/rabbitmq-server -detached
  "$ctl" -q wait --timeout 120 "$dir/rabbit.pid" >/dev/null
  cat "$dir/rabbit.pid"
  ;;
stop)
  if [ -f "$dir/rabbit.pid" ]; then
    "$ctl" -q shutdown >/dev/null 2>&1 || kill "$(cat "$dir/rabbit.pid")" 2>/dev/null || true
  fi
  ;;
*)
  echo "rabbitmq.sh: $cmd: want start or stop" >&2
  exit 2
  ;;
esac
