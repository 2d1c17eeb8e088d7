#!/usr/bin/env bash
# hass and Masakari side by side on the same real Nova (test/rig/sidebyside_test.go): the
# rig's four simulated hosts, Nova's control plane on h1, nova-compute on h3 and h4; every
# case run against hass, then against Masakari (Debian 12's Zed packages, its defaults), and
# one table printed. Not part of the test command (about 20 minutes). As root, on a machine
# that runs the rig (test/rig/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export HASS_REQUIRE_RIG=1 HASS_REQUIRE_IPMI=1
go test -tags sidebyside -count=1 -run '^TestSideBySide$' -v -timeout 60m ./test/rig 2>&1 |
  tee /tmp/hass-sidebyside.log | grep -E 'sidebyside_test.go|^\s*\| |^--- |^(ok|FAIL)' || true
grep -q '^--- PASS: TestSideBySide' /tmp/hass-sidebyside.log
