#!/usr/bin/env bash
# Smoke test of the tiny test guest (scripts/build-guest-image.sh) under qemu-system-x86_64
# directly: no libvirt. KVM where /dev/kvm is usable, else TCG. Each check has a bounded
# timeout and prints one PASS/FAIL/SKIP line with its timing; the last line counts them.
#
#   ./scripts/guest-smoke.sh
#
# Three guests, one after the other:
#   A  boot to the first guest-ping answer; guest-ping; the guest's address reached from the host
#      (user-mode NIC, hostfwd to 127.0.0.1); reboot from inside (guest-exec reboot); reboot by
#      the agent (guest-shutdown mode=reboot, as `virsh reboot` does); watchdog (kill -9 the
#      petter -> WATCHDOG, reset, back); panic (echo c > /proc/sysrq-trigger -> GUEST_PANICKED)
#   B  ACPI power button (QMP system_powerdown, as `virsh shutdown --mode acpi`) -> QEMU exits
#   C  on a tap in a network namespace made for the test, static address: ICMP and TCP reach of
#      the guest's own address; then guest-shutdown (as `virsh shutdown --mode agent`) -> exits
#
# Environment: HASS_GUEST_CACHE (see build-guest-image.sh); HASS_SMOKE_KEEP=1 keeps the work
# directory (consoles, QMP and agent transcripts); HASS_SMOKE_BOOT_TIMEOUT (seconds, default 120
# under TCG, 30 with KVM); HASS_SMOKE_NETNS=0 runs guest C on user-mode networking instead;
# HASS_SMOKE_QBOOT= (empty) boots with SeaBIOS instead of qboot.
set -uo pipefail
cd "$(dirname "$0")/.."
trap '' PIPE # a write to a guest whose QEMU has gone fails instead of killing the script

need() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "guest-smoke: installing $2" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }
  command -v "$1" >/dev/null 2>&1 || { echo "guest-smoke: $1 ($2) missing" >&2; exit 1; }
}
need qemu-system-x86_64 qemu-system-x86
need socat socat
need ip iproute2
need ss iproute2
command -v ping >/dev/null 2>&1 || (need ping iputils-ping) 2>/dev/null || true # for the ICMP check only

build=$(bash scripts/build-guest-image.sh) || { echo "guest-smoke: build-guest-image.sh failed" >&2; exit 1; }
kernel=$(sed -n 's/^kernel=//p' <<<"$build")
initrd=$(sed -n 's/^initrd=//p' <<<"$build")
cmdline=$(sed -n 's/^cmdline=//p' <<<"$build")

if [ -r /dev/kvm ] && [ -w /dev/kvm ] && echo quit | timeout 20 qemu-system-x86_64 -accel kvm -M none \
  -display none -nodefaults -monitor stdio >/dev/null 2>&1; then
  accel=(-accel kvm -cpu host) accel_name=KVM boot_timeout=${HASS_SMOKE_BOOT_TIMEOUT:-30}
else
  accel=(-accel tcg) accel_name=TCG boot_timeout=${HASS_SMOKE_BOOT_TIMEOUT:-120}
fi
# Firmware: qboot where QEMU ships it. SeaBIOS resets the machine once or twice more on every
# reboot (its "hard reboot" on re-entry), so a guest reboot shows as 3 RESET events, not 1.
bios=()
fw=SeaBIOS
qboot=${HASS_SMOKE_QBOOT:-/usr/share/qemu/qboot.rom}
if [ -n "$qboot" ] && [ -f "$qboot" ]; then bios=(-bios "$qboot") fw=qboot; fi
wdt=10 # guest watchdog timeout, seconds (hass.wdt=)
if qemu-system-x86_64 -help | grep -q '^-action'; then
  actions=(-action watchdog=reset,panic=pause)
else
  actions=(-watchdog-action reset)
fi

d=$(mktemp -d /tmp/hass-guest-smoke.XXXXXX)
netns=""
declare -A FD=() SOCAT=() QPID=()
cleanup() {
  local k
  for k in "${!QPID[@]}"; do stop_vm "$k"; done
  [ -n "$netns" ] && ip netns del "$netns" 2>/dev/null
  if [ "${HASS_SMOKE_KEEP:-0}" = 1 ]; then echo "guest-smoke: kept $d" >&2; else rm -rf "$d"; fi
}
trap cleanup EXIT

passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); echo "PASS $*"; }
skip() { skipped=$((skipped + 1)); echo "SKIP $*"; }
fail() { # name what; the end of the guest's console for the cause
  failed=$((failed + 1))
  echo "FAIL $2"
  if [ -f "$d/$1.console" ]; then
    echo "---- last lines of guest $1's console:"
    tail -15 "$d/$1.console" | tr -d '\r' | sed 's/^/    /'
    echo "----"
  fi
}
now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}'; }

free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 30000))
    ss -Htln "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return; }
  done
  echo 0
}

# A line-oriented JSON connection (QMP or guest agent) over a unix socket: socat reads a fifo
# we keep open and writes everything it receives to a log. The socket must stay open: QEMU
# drops a client that half-closes, and agent replies then go to the next client.
connect() { # vm kind
  local k="$1.$2" fd i
  for i in $(seq 100); do [ -S "$d/$k.sock" ] && break; sleep 0.1; done
  mkfifo "$d/$k.in"
  : >"$d/$k.log"
  socat - "UNIX-CONNECT:$d/$k.sock" <"$d/$k.in" >>"$d/$k.log" 2>>"$d/socat.err" &
  SOCAT[$k]=$!
  exec {fd}>"$d/$k.in"
  FD[$k]=$fd
}
send() { printf '%s\n' "$3" >&"${FD[$1.$2]}" 2>/dev/null; }
lines() { wc -l <"$d/$1.$2.log"; }
# wait_for vm kind from-line regex timeout: the first matching line after from-line -> $REPLY
wait_for() {
  local log="$d/$1.$2.log" from="$3" re="$4" end
  end=$(awk -v a="$EPOCHREALTIME" -v t="$5" 'BEGIN{printf "%.3f", a+t}')
  while :; do
    REPLY=$(tail -n +"$((from + 1))" "$log" | grep -E -m1 -- "$re") && return 0
    awk -v a="$EPOCHREALTIME" -v e="$end" 'BEGIN{exit !(a>e)}' && return 1
    sleep 0.1
  done
}
seq_id=0
# call vm kind timeout execute [arguments-json]: one command, its reply in $REPLY
call() {
  local vm="$1" kind="$2" timeout="$3" cmd="$4" args="${5:-}" id from
  seq_id=$((seq_id + 1))
  id="c$seq_id"
  from=$(lines "$vm" "$kind")
  if [ -n "$args" ]; then
    send "$vm" "$kind" "{\"execute\":\"$cmd\",\"arguments\":$args,\"id\":\"$id\"}"
  else
    send "$vm" "$kind" "{\"execute\":\"$cmd\",\"id\":\"$id\"}"
  fi
  wait_for "$vm" "$kind" "$from" "\"id\": ?\"$id\"" "$timeout"
}
# await_agent vm timeout: guest-ping until one is answered (re-sent every 3 s; a ping sent
# while the agent is down waits in the channel and is answered when the agent starts).
await_agent() {
  local vm="$1" end ids="" from id
  end=$(awk -v a="$EPOCHREALTIME" -v t="$2" 'BEGIN{printf "%.3f", a+t}')
  from=$(lines "$vm" qga)
  while :; do
    seq_id=$((seq_id + 1))
    id="p$seq_id"
    ids="${ids:+$ids|}$id"
    send "$vm" qga "{\"execute\":\"guest-ping\",\"id\":\"$id\"}"
    wait_for "$vm" qga "$from" "\"return\".*\"id\": ?\"($ids)\"" 3 && return 0
    awk -v a="$EPOCHREALTIME" -v e="$end" 'BEGIN{exit !(a>e)}' && return 1
    vm_alive "$vm" || return 1
  done
}
guest_exec() { # vm shell-command: start it in the guest; no wait for the agent's reply (a
  # reboot or a panic can come before it)
  local esc=${2//\\/\\\\}
  esc=${esc//\"/\\\"}
  seq_id=$((seq_id + 1))
  send "$1" qga "{\"execute\":\"guest-exec\",\"arguments\":{\"path\":\"/bin/sh\",\"arg\":[\"-c\",\"$esc\"]},\"id\":\"x$seq_id\"}"
}
evsince() { # seconds from $1 to the timestamp of the QMP event in $REPLY
  local sec usec
  sec=$(grep -o '"seconds": [0-9]*' <<<"$REPLY" | head -1 | tr -dc 0-9)
  usec=$(grep -o '"microseconds": [0-9]*' <<<"$REPLY" | head -1 | tr -dc 0-9)
  awk -v a="$1" -v s="$sec" -v u="$usec" 'BEGIN{printf "%.1f", s + u / 1e6 - a}'
}
vm_alive() { [ ! -e "$d/$1.exit" ]; }
await_exit() { # vm timeout
  local i
  for i in $(seq "$(($2 * 10))"); do vm_alive "$1" || return 0; sleep 0.1; done
  return 1
}

start_vm() { # vm extra-cmdline [netdev-args...]: boots it; $T0 is when QEMU was started
  local vm="$1" extra="$2"
  shift 2
  local net=("$@")
  [ "${#net[@]}" -gt 0 ] || { port=$(free_port); net=(-netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$port-:80"); }
  local q=(qemu-system-x86_64 -name "hass-smoke-$vm" -M pc -m 128 -smp 1 "${accel[@]}" "${bios[@]}"
    -nodefaults -no-user-config -display none
    -kernel "$kernel" -initrd "$initrd" -append "$cmdline hass.wdt=$wdt $extra"
    -serial "file:$d/$vm.console"
    -device virtio-serial-pci,id=vser0
    -chardev "socket,id=qga0,path=$d/$vm.qga.sock,server=on,wait=off"
    -device virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0
    -device pvpanic -device i6300esb "${actions[@]}"
    "${net[@]}" -device virtio-net-pci,netdev=net0
    -qmp "unix:$d/$vm.qmp.sock,server=on,wait=off" -pidfile "$d/$vm.pid")
  if [ -n "$netns" ] && [ "$vm" = C ]; then q=(ip netns exec "$netns" "${q[@]}"); fi
  T0=$(now)
  ("${q[@]}" >"$d/$vm.qemu.out" 2>&1; echo $? >"$d/$vm.exit") &
  QPID[$vm]=$!
  connect "$vm" qmp
  connect "$vm" qga
  call "$vm" qmp 20 qmp_capabilities || { fail "$vm" "guest $vm: QMP did not answer: $(cat "$d/$vm.qemu.out")"; return 1; }
}
stop_vm() { # vm: quit QEMU if it is still there, close the connections
  local vm="$1" k fd
  if vm_alive "$vm" && [ -f "$d/$vm.pid" ]; then
    send "$vm" qmp '{"execute":"quit"}'
    await_exit "$vm" 10 || kill "$(cat "$d/$vm.pid")" 2>/dev/null
    await_exit "$vm" 10
  fi
  for k in qmp qga; do
    fd=${FD[$vm.$k]:-}
    [ -n "$fd" ] && exec {fd}>&- 2>/dev/null
    [ -n "${SOCAT[$vm.$k]:-}" ] && kill "${SOCAT[$vm.$k]}" 2>/dev/null
    unset "FD[$vm.$k]" "SOCAT[$vm.$k]"
  done
  wait "${QPID[$vm]}" 2>/dev/null
  unset "QPID[$vm]"
}

echo "guest-smoke: $accel_name, $fw; kernel $kernel ($(du -k "$kernel" | cut -f1) KiB), initrd $initrd ($(du -k "$initrd" | cut -f1) KiB)"

# ---------------------------------------------------------------- guest A
if start_vm A ""; then
  if await_agent A "$boot_timeout"; then
    boot_s=$(since "$T0")
    pass "boot: first guest-ping answered ${boot_s}s after QEMU started ($accel_name)"
  else
    fail A "boot: no guest-ping answer within ${boot_timeout}s"
  fi

  t=$(now)
  if call A qga 10 guest-ping && grep -q '"return": {}' <<<"$REPLY"; then
    pass "guest-ping: answered in $(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN{printf "%d", (b-a)*1000}') ms"
  else
    fail A "guest-ping: no answer within 10s"
  fi

  # The guest's address (DHCP from QEMU's user-mode network), then the host reaches its web
  # server through the hostfwd on 127.0.0.1. DHCP runs in the background: give it a few seconds.
  t=$(now)
  addr=""
  for _ in $(seq 30); do
    call A qga 10 guest-network-get-interfaces &&
      addr=$(grep -o '"ip-address": "[0-9.]*"' <<<"$REPLY" | grep -v '127\.0\.0\.1' | head -1 | cut -d'"' -f4)
    [ -n "$addr" ] && break
    sleep 1
  done
  body=""
  if [ -n "$addr" ]; then
    for _ in $(seq 10); do
      body=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; printf 'GET / HTTP/1.0\r\n\r\n' >&3; cat <&3" 2>/dev/null | tail -1 | tr -d '\r')
      [ "$body" = "hass-guest ok" ] && break
      sleep 1
    done
  fi
  if [ "$body" = "hass-guest ok" ]; then
    pass "network: guest address $addr (DHCP); host reached its port 80 via 127.0.0.1:$port in $(since "$t")s"
  else
    fail A "network: guest address '${addr}', HTTP through 127.0.0.1:$port answered '${body}'"
  fi

  # reboot_check name how-to-trigger...: RESET event, then the agent answers again.
  reboot_check() {
    local name="$1" from t
    shift
    from=$(lines A qmp)
    t=$(now)
    "$@"
    if ! wait_for A qmp "$from" '"event": ?"RESET"' 60; then
      fail A "$name: no RESET within 60s"
      return 1
    fi
    local reset_s
    reset_s=$(evsince "$t")
    if await_agent A "$boot_timeout"; then
      local resets
      resets=$(tail -n +"$((from + 1))" "$d/A.qmp.log" | grep -c '"event": "RESET"')
      pass "$name: reset after ${reset_s}s ($resets RESET event(s)), agent answered again after $(since "$t")s"
    else
      fail A "$name: reset, but the agent did not answer within ${boot_timeout}s"
      return 1
    fi
  }
  reboot_check "reboot from inside (guest-exec reboot)" guest_exec A "reboot"
  reboot_check "reboot by the agent (guest-shutdown mode=reboot)" \
    send A qga '{"execute":"guest-shutdown","arguments":{"mode":"reboot"}}'

  # Watchdog: the petter (busybox watchdog, timeout hass.wdt) killed with SIGKILL cannot disarm
  # the i6300esb; QEMU reports WATCHDOG and, with action reset, resets the guest.
  from=$(lines A qmp)
  t=$(now)
  guest_exec A "killall -9 watchdog"
  if wait_for A qmp "$from" '"event": ?"WATCHDOG"' $((wdt + 60)); then
    wd_s=$(evsince "$t")
    act=$(grep -o '"action": "[a-z-]*"' <<<"$REPLY" | cut -d'"' -f4)
    if await_agent A "$boot_timeout"; then
      pass "watchdog: petter killed, WATCHDOG (action $act) after ${wd_s}s (timeout ${wdt}s), agent back after $(since "$t")s"
    else
      fail A "watchdog: WATCHDOG (action $act) after ${wd_s}s, but the agent did not come back"
    fi
  else
    fail A "watchdog: no WATCHDOG event within $((wdt + 60))s of killing the petter"
  fi

  from=$(lines A qmp)
  t=$(now)
  guest_exec A "echo c > /proc/sysrq-trigger"
  if wait_for A qmp "$from" '"event": ?"GUEST_PANICKED"' 60; then
    act=$(grep -o '"action": "[a-z-]*"' <<<"$REPLY" | cut -d'"' -f4)
    pass "panic: GUEST_PANICKED (action $act) after $(evsince "$t")s"
  else
    fail A "panic: no GUEST_PANICKED within 60s"
  fi
  stop_vm A
fi

# ---------------------------------------------------------------- guest B
if start_vm B ""; then
  if await_agent B "$boot_timeout"; then
    from=$(lines B qmp)
    t=$(now)
    call B qmp 10 system_powerdown
    if await_exit B 60; then
      why=""
      wait_for B qmp "$from" '"event": ?"SHUTDOWN"' 1 && why=$(grep -o '"reason": "[a-z-]*"' <<<"$REPLY" | cut -d'"' -f4)
      pass "ACPI power button (system_powerdown): guest powered off, QEMU exited after $(since "$t")s${why:+ (SHUTDOWN reason $why)}"
    else
      fail B "ACPI power button (system_powerdown): QEMU still running after 60s"
    fi
  else
    fail B "ACPI power button: guest B did not boot within ${boot_timeout}s"
  fi
  stop_vm B
fi

# ---------------------------------------------------------------- guest C
# A tap in a network namespace made for this test: the guest has a static address there
# (hass.ip=) and the namespace reaches it directly, as a host reaches a guest on a bridge.
ns_host=10.254.77.1 ns_guest=10.254.77.2
cnet=()
if [ "${HASS_SMOKE_NETNS:-1}" = 1 ] && ip netns add "hass-smoke-$$" 2>/dev/null; then
  netns="hass-smoke-$$"
  ip -n "$netns" link set lo up
  if ip -n "$netns" tuntap add dev hstap0 mode tap && ip -n "$netns" addr add "$ns_host/24" dev hstap0 &&
    ip -n "$netns" link set hstap0 up; then
    cnet=(-netdev tap,id=net0,ifname=hstap0,script=no,downscript=no)
  else
    ip netns del "$netns"
    netns=""
  fi
fi
if [ "${#cnet[@]}" -gt 0 ]; then
  start_vm C "hass.ip=$ns_guest/24" "${cnet[@]}" && c_up=1 || c_up=0
else
  start_vm C "" && c_up=1 || c_up=0
fi
if [ "$c_up" = 1 ]; then
  if await_agent C "$boot_timeout"; then
    if [ -n "$netns" ]; then
      t=$(now)
      icmp="" tcp=""
      for _ in $(seq 20); do
        if [ -z "$icmp" ]; then
          if command -v ping >/dev/null 2>&1; then
            ip netns exec "$netns" ping -c1 -W1 "$ns_guest" >/dev/null 2>&1 && icmp="ICMP echo answered"
          else
            icmp="(no ping command: ICMP not tried)"
          fi
        fi
        tcp=$(ip netns exec "$netns" timeout 5 bash -c "exec 3<>/dev/tcp/$ns_guest/80; printf 'GET / HTTP/1.0\r\n\r\n' >&3; cat <&3" 2>/dev/null | tail -1 | tr -d '\r')
        [ -n "$icmp" ] && [ "$tcp" = "hass-guest ok" ] && break
        sleep 0.5
      done
      if [ -n "$icmp" ] && [ "$tcp" = "hass-guest ok" ]; then
        pass "network (tap in netns $netns): guest's static address $ns_guest reached: $icmp, TCP port 80 answered, in $(since "$t")s"
      else
        fail C "network (tap in netns): $ns_guest: ICMP '${icmp}', TCP '${tcp}'"
      fi
    else
      skip "network (tap in a network namespace): ip netns unavailable here"
    fi
    from=$(lines C qmp)
    t=$(now)
    send C qga '{"execute":"guest-shutdown","arguments":{"mode":"powerdown"}}'
    if await_exit C 60; then
      pass "agent shutdown (guest-shutdown mode=powerdown): QEMU exited after $(since "$t")s"
    else
      fail C "agent shutdown (guest-shutdown): QEMU still running after 60s"
    fi
  else
    fail C "guest C did not boot within ${boot_timeout}s"
  fi
  stop_vm C
fi

echo "guest-smoke: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
