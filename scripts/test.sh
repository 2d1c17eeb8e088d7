#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine as on a developer's: installs and starts
# what the tests need (libvirtd and QEMU from Debian's packages; needs root), then runs
# formatting and vet checks, every unit, scenario, simulator, API, store and CLI test, the
# end-to-end tests against real libvirtd + QEMU guests, the multi-host rig's tests (test/rig),
# and a short fuzz pass per fuzzer.
#
#   ./scripts/test.sh            everything
#   FUZZTIME=20000x ./scripts/test.sh   fuzz each target longer (default 3000 executions)
set -euo pipefail
cd "$(dirname "$0")/.."

# Go: the project's go.mod names the toolchain; Debian's machines here carry it in /usr/local/go.
if ! command -v go >/dev/null 2>&1; then
  export PATH="$PATH:/usr/local/go/bin"
fi
if ! command -v go >/dev/null 2>&1; then
  echo "test.sh: Go is not installed; need Go >= $(sed -n 's/^go //p' go.mod) (https://go.dev/dl)" >&2
  exit 1
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" $unformatted >&2
  exit 1
fi

echo "== go vet"
go vet ./...

echo "== libvirtd and QEMU (installed and started if missing)"
# libvirtd under a subreaper: a killed emulator is reaped at once, so libvirt reports the
# crash in milliseconds rather than when a lazy PID 1 gets round to it.
export HASS_LIBVIRTD_SUBREAPER="${HASS_LIBVIRTD_SUBREAPER:-1}"
bash scripts/install-libvirt.sh
export HASS_REQUIRE_LIBVIRT=1 # from here on, a missing libvirtd is a failure, not a skip

echo "== ipmitool and OpenIPMI's ipmi_sim (installed if missing): the BMC the fencing tests talk to"
if ! command -v ipmitool >/dev/null 2>&1 || ! command -v ipmi_sim >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends ipmitool openipmi >/dev/null
fi
export HASS_REQUIRE_IPMI=1 # from here on, a missing ipmitool or ipmi_sim is a failure

echo "== promtool (Debian's prometheus package, installed if missing): checks what /metrics serves"
if ! command -v promtool >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
export HASS_REQUIRE_PROMTOOL=1 # from here on, a missing promtool is a failure

echo "== Chromium (Debian's package, installed if missing): the web status page's test drives it headless"
if ! command -v chromium >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
export HASS_REQUIRE_CHROMIUM=1 # from here on, a missing chromium is a failure

echo "== RabbitMQ (Debian's rabbitmq-server, installed if missing; each test starts its own on loopback): Nova's notifications"
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  export DEBIAN_FRONTEND=noninteractive
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  apt-get update -qq && apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
fi
export HASS_REQUIRE_RABBITMQ=1 # from here on, a test that cannot run RabbitMQ is a failure

echo "== OpenStack Nova (Debian 12's Zed packages, installed if missing; the rig's Nova test runs its own all-in-one)"
NOVA_IP=10.77.0.1 bash test/rig/nova/aio.sh install

echo "== the tiny test guest (Debian's kernel, busybox, qemu-guest-agent; built once, then cached)"
bash scripts/build-guest-image.sh >/dev/null

# Every go test run is verbose into a log; the summary counts what passed, failed and was
# skipped. Each run has an explicit timeout with a wide margin over what it takes here.
passed=0 failed=0 skipped=0
gotest() { # name timeout packages/flags...
  local name="$1" timeout="$2" log rc
  shift 2
  log=$(mktemp)
  set +e
  go test -count=1 -v -timeout "$timeout" "$@" >"$log" 2>&1
  rc=$?
  set -e
  grep -E '^(--- FAIL|FAIL|ok|panic)|^ +--- FAIL|--- SKIP|^ +[a-z_]+_test\.go:[0-9]+: (bench|measured|kill)' "$log" || true
  passed=$((passed + $(grep -cE '^ *--- PASS' "$log" || true)))
  failed=$((failed + $(grep -cE '^ *--- FAIL' "$log" || true)))
  skipped=$((skipped + $(grep -cE '^ *--- SKIP' "$log" || true)))
  if [ "$rc" -ne 0 ]; then
    echo "test.sh: $name failed; the last 150 lines of their output:" >&2
    tail -150 "$log" >&2
    # What each failed test itself said (its t.Log/t.Error lines, not the logs it dumps),
    # last, where a truncated CI report still shows it.
    for t in $(grep -oE '^ *--- FAIL: [A-Za-z0-9_/]+' "$log" | awk '{print $3}' | grep -v / | sort -u); do
      echo "test.sh: what $t said:" >&2
      awk -v t="$t" '$0 == "=== RUN   " t {on=1; next} on && /^=== RUN   / && $3 !~ "^" t "/" {on=0} on' "$log" |
        grep -E '^ +[a-z_]+_test\.go:[0-9]+:' | cut -c1-400 | head -80 >&2
    done
    echo "summary: $passed passed, $((failed > 0 ? failed : 1)) failed, $skipped skipped"
    exit "$rc"
  fi
}

echo "== go test (units, scenarios, simulator, API, store, daemon, CLI)"
gotest "unit tests" 20m $(go list ./... | grep -v -e /test/e2e -e /test/rig -e /hypervisor/libvirt)

echo "== go test against the real libvirtd, one package at a time (they restart libvirtd)"
gotest "end-to-end tests" 45m -p 1 ./hypervisor/libvirt ./test/e2e

echo "== go test: the multi-host rig (simulated hosts in namespaces, IPMI BMCs; leaves this machine's libvirtd alone)"
export HASS_REQUIRE_RIG=1 # root is given here: a machine that cannot run the rig is a failure
gotest "multi-host rig tests" 45m ./test/rig

# A count, not a duration: with a duration Go 1.26's fuzz coordinator can fail a target with a
# bare "context deadline exceeded" when -fuzztime ends under CPU load (golang/go#75804, fixed
# in Go 1.27); a count has no deadline to race.
echo "== fuzz (${FUZZTIME:=3000x} each)"
for target in $(grep -rhoE '^func Fuzz[A-Za-z0-9_]+' --include='*_test.go' . | sed 's/^func //' | sort -u); do
  pkg=$(grep -rlE "^func ${target}\(" --include='*_test.go' . | head -1 | xargs dirname)
  echo "-- $pkg $target"
  go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"
done

echo "== the simulator's promise: 8 hosts, 100 VMs, 24 h, several seeds"
go build -o /tmp/hass-test-bin ./cmd/hass
for seed in 101 202 303; do
  /tmp/hass-test-bin sim --seed "$seed" --hosts 8 --vms 100 --hours 24 --json
done
echo "test.sh: all passed"
echo "summary: $passed passed, $failed failed, $skipped skipped"
