#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine as on a developer's: installs what the
# tests need, then runs formatting and vet checks, every unit, scenario, simulator and CLI
# test, and a short fuzz pass over every parser.
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

echo "== go test"
go test -count=1 ./...

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
