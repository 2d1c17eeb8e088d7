package ipmi

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bmcSim is a real BMC for tests: OpenIPMI's ipmi_sim on loopback, its chassis power
// kept in a file by a chassis_control script (as the rig's BMCs do).
type bmcSim struct {
	addr  string
	power string // the file holding "on" or "off"
}

const (
	simUser = "admin"
	simPass = "s3cret-pw"
)

func startBMC(t *testing.T) *bmcSim {
	t.Helper()
	for _, tool := range []string{"ipmi_sim", "ipmitool"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("HASS_REQUIRE_IPMI") != "" {
				t.Fatalf("%s is not installed (Debian: openipmi, ipmitool)", tool)
			}
			t.Skipf("%s is not installed (Debian: openipmi, ipmitool); HASS_REQUIRE_IPMI=1 makes this a failure", tool)
		}
	}
	dir := t.TempDir()
	port := freeUDPPort(t)
	power := filepath.Join(dir, "power")
	if err := os.WriteFile(power, []byte("on\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hook := filepath.Join(dir, "chassis.sh")
	script := fmt.Sprintf(`#!/bin/sh
op=$1; shift
case "$op" in
get) for p in "$@"; do case $p in
       power) if [ "$(cat %[1]s)" = on ]; then echo power:1; else echo power:0; fi ;;
       boot) echo boot:default ;;
       *) echo "unsupported: $p"; exit 1 ;;
     esac; done ;;
set) while [ $# -ge 2 ]; do case "$1:$2" in
       power:0) echo off > %[1]s ;;
       power:1) echo on > %[1]s ;;
       *) ;;
     esac; shift 2; done ;;
*) exit 1 ;;
esac
`, power)
	if err := os.WriteFile(hook, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`name "hass-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789000001
  endlan
  chassis_control "%s"
  user 2 true "%s" "%s" admin 10 none md2 md5 straight
`, port, hook, simUser, simPass)
	emu := "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nsel_enable 0x20 1000 0x0a\nmc_enable 0x20\n"
	for name, body := range map[string]string{"lan.conf": conf, "bmc.emu": emu} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ipmi_sim", "-n", "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "bmc.emu"), "-s", filepath.Join(dir, "state"))
	log, err := os.Create(filepath.Join(dir, "ipmi_sim.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ipmi_sim: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _ = log.Close() })
	b := &bmcSim{addr: fmt.Sprintf("127.0.0.1:%d", port), power: power}
	// ipmi_sim answers once it has bound its port.
	c := b.client(t, simPass)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := c.PowerStatus(context.Background()); err == nil {
			return b
		} else if time.Now().After(deadline) {
			out, _ := os.ReadFile(filepath.Join(dir, "ipmi_sim.log"))
			t.Fatalf("ipmi_sim does not answer: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *bmcSim) client(t *testing.T, pass string) *Client {
	t.Helper()
	c, err := New(BMC{Addr: b.addr, User: simUser, Password: pass, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (b *bmcSim) state(t *testing.T) string {
	t.Helper()
	s, err := os.ReadFile(b.power)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(s))
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func TestPowerCycleAgainstIPMISim(t *testing.T) {
	b := startBMC(t)
	c := b.client(t, simPass)
	ctx := context.Background()
	if on, err := c.PowerStatus(ctx); err != nil || !on {
		t.Fatalf("status at start = %t, %v; want on", on, err)
	}
	if err := c.PowerOff(ctx); err != nil {
		t.Fatalf("power off: %v", err)
	}
	if got := b.state(t); got != "off" {
		t.Fatalf("chassis after power off = %q", got)
	}
	if on, err := c.PowerStatus(ctx); err != nil || on {
		t.Fatalf("status after power off = %t, %v; want off", on, err)
	}
	if err := c.PowerOn(ctx); err != nil {
		t.Fatalf("power on: %v", err)
	}
	if on, err := c.PowerStatus(ctx); err != nil || !on || b.state(t) != "on" {
		t.Fatalf("status after power on = %t, %v (chassis %s); want on", on, err, b.state(t))
	}
}

func TestWrongPasswordIsRefusedAndNotEchoed(t *testing.T) {
	b := startBMC(t)
	c := b.client(t, "wrong-password-123")
	err := c.PowerOff(context.Background())
	if err == nil {
		t.Fatal("power off with a wrong password succeeded")
	}
	if strings.Contains(err.Error(), "wrong-password-123") {
		t.Fatalf("the error shows the password: %v", err)
	}
	if b.state(t) != "on" {
		t.Fatal("a refused power off changed the chassis")
	}
}

func TestUnreachableBMCFailsWithinTheTimeout(t *testing.T) {
	if _, err := exec.LookPath("ipmitool"); err != nil {
		t.Skip("ipmitool is not installed")
	}
	c, err := New(BMC{Addr: fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t)), User: "u", Password: "p", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.PowerStatus(context.Background()); err == nil {
		t.Fatal("status from a BMC that is not there succeeded")
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("took %s; want about the 2 s timeout", d)
	}
}

func TestParseStatus(t *testing.T) {
	for in, want := range map[string]bool{"Chassis Power is on\n": true, "Chassis Power is off": false} {
		if got, err := parseStatus(in); err != nil || got != want {
			t.Errorf("parseStatus(%q) = %t, %v", in, got, err)
		}
	}
	if _, err := parseStatus("Error: Unable to establish IPMI v2 / RMCP+ session"); err == nil {
		t.Error("an error line parsed as a status")
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		b    BMC
		want string
	}{
		{BMC{User: "u"}, "bmc address"},
		{BMC{Addr: "10.0.0.1", User: ""}, "bmc user"},
		{BMC{Addr: "10.0.0.1:99999", User: "u"}, "bad port"},
		{BMC{Addr: "10.0.0.1", User: "u", Password: "a\nb"}, "bmc password"},
		{BMC{Addr: "10.0.0.1", User: "u", Cipher: 18}, "cipher"},
	} {
		if err := tc.b.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v; want an error naming %q", tc.b, err, tc.want)
		}
	}
}
