#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine as on a developer's: installs and starts
# what the tests need (libvirtd and QEMU from Debian's packages; needs root), then runs
# formatting and vet checks, every unit, scenario, simulator, API, store and CLI test, the
# end-to-end tests against real libvirtd + QEMU guests, and a short fuzz pass per fuzzer.
#
#   ./scripts/test.sh            everything
#   FUZZTIME=30s ./scripts/test.sh   fuzz each target longer (default 5s)
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

echo "== go test (units, scenarios, simulator, API, store, CLI)"
go test -count=1 $(go list ./... | grep -v -e /test/e2e -e /hypervisor/libvirt)

echo "== go test against the real libvirtd, one package at a time (they restart libvirtd)"
log=$(mktemp)
set +e
go test -count=1 -p 1 -v ./hypervisor/libvirt ./test/e2e >"$log" 2>&1
rc=$?
set -e
grep -E '^(--- |PASS|FAIL|ok|panic)|^ +[a-z_]+_test\.go:[0-9]+: (bench|measured|kill)' "$log" || true
if [ "$rc" -ne 0 ]; then
  echo "test.sh: end-to-end tests failed; the last 150 lines of their output:" >&2
  tail -150 "$log" >&2
  exit "$rc"
fi

echo "== fuzz (${FUZZTIME:=5s} each)"
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
