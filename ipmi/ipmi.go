// Package ipmi controls a host's chassis power through its BMC, over IPMI v2.0 (RMCP+,
// "lanplus"), by running ipmitool: the fence hass uses to power a lost host off, confirm
// that it is off, read its power state (the host power layer), and power it on again.
//
// ipmitool (Debian's ipmitool package) is the reference IPMI client, and what every fencing
// agent in the field (fence_ipmilan, Masakari's and HASS's) runs. The password never appears
// on a command line (where ps would show it): it goes to ipmitool in its environment (-E,
// IPMI_PASSWORD), and it is never logged or returned in an error.
package ipmi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// BMC is how to reach one host's BMC.
type BMC struct {
	Addr     string // host or host:port (UDP, default 623)
	User     string
	Password string
	// Cipher is the RMCP+ cipher suite (-C); 3 (AES-128, HMAC-SHA1) when 0, as ipmitool's
	// default of 17 is refused by older BMCs and by ipmi_sim.
	Cipher int
	// Timeout bounds one ipmitool run; 5 s when 0.
	Timeout time.Duration
}

// Validate names the first bad field.
func (b BMC) Validate() error {
	switch {
	case b.Addr == "":
		return errors.New("bmc address: empty")
	case strings.ContainsAny(b.Addr, " \t\n/"):
		return fmt.Errorf("bmc address %q: want host or host:port", b.Addr)
	case b.User == "":
		return errors.New("bmc user: empty")
	case strings.ContainsAny(b.User, "\n\x00"):
		return errors.New("bmc user: contains a newline or NUL")
	case strings.ContainsAny(b.Password, "\n\x00"):
		return errors.New("bmc password: contains a newline or NUL")
	case b.Cipher < 0 || b.Cipher > 17:
		return fmt.Errorf("bmc cipher suite %d: want 0-17", b.Cipher)
	}
	if _, port, err := net.SplitHostPort(b.Addr); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("bmc address %q: bad port", b.Addr)
		}
	}
	return nil
}

// Client runs ipmitool against one BMC.
type Client struct {
	bmc  BMC
	tool string
}

// New returns a client for b; it checks b and that ipmitool is installed.
func New(b BMC) (*Client, error) {
	if err := b.Validate(); err != nil {
		return nil, err
	}
	tool, err := exec.LookPath("ipmitool")
	if err != nil {
		return nil, fmt.Errorf("ipmitool is not installed (Debian: apt-get install ipmitool): %w", err)
	}
	return &Client{bmc: b, tool: tool}, nil
}

// Addr is the BMC's address.
func (c *Client) Addr() string { return c.bmc.Addr }

// PowerStatus reports whether the chassis power is on.
func (c *Client) PowerStatus(ctx context.Context) (on bool, err error) {
	out, err := c.run(ctx, "chassis", "power", "status")
	if err != nil {
		return false, err
	}
	return parseStatus(out)
}

// PowerOff cuts the chassis power at once (not an ACPI soft-off: a fence does not wait for
// the OS).
func (c *Client) PowerOff(ctx context.Context) error {
	_, err := c.run(ctx, "chassis", "power", "off")
	return err
}

// PowerOn turns the chassis power on.
func (c *Client) PowerOn(ctx context.Context) error {
	_, err := c.run(ctx, "chassis", "power", "on")
	return err
}

// parseStatus reads ipmitool's "Chassis Power is on|off".
func parseStatus(out string) (bool, error) {
	s := strings.ToLower(strings.TrimSpace(out))
	switch {
	case strings.HasSuffix(s, "power is on"):
		return true, nil
	case strings.HasSuffix(s, "power is off"):
		return false, nil
	}
	return false, fmt.Errorf("ipmitool chassis power status: unexpected answer %q", firstLine(out))
}

func (c *Client) run(ctx context.Context, args ...string) (string, error) {
	to := c.bmc.Timeout
	if to <= 0 {
		to = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	host, port := c.bmc.Addr, ""
	if h, p, err := net.SplitHostPort(c.bmc.Addr); err == nil {
		host, port = h, p
	}
	cipher := c.bmc.Cipher
	if cipher == 0 {
		cipher = 3
	}
	// -N 1 -R 2: ipmitool's own retransmission, one second apart, so a lost UDP datagram
	// costs a second, not the whole timeout.
	argv := []string{"-I", "lanplus", "-C", strconv.Itoa(cipher), "-N", "1", "-R", "2", "-H", host, "-U", c.bmc.User, "-E"}
	if port != "" {
		argv = append(argv, "-p", port)
	}
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, c.tool, argv...)
	cmd.Env = []string{"IPMI_PASSWORD=" + c.bmc.Password, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	what := "ipmitool " + strings.Join(args, " ") + " against " + c.bmc.Addr
	if ctx.Err() != nil {
		return "", fmt.Errorf("%s: no answer within %s", what, to)
	}
	if err != nil {
		msg := firstLine(stderr.String())
		if msg == "" {
			msg = firstLine(stdout.String())
		}
		return "", fmt.Errorf("%s: %v: %s", what, err, c.scrub(msg))
	}
	return stdout.String(), nil
}

// scrub removes the password from a message, should a BMC or ipmitool ever echo it.
func (c *Client) scrub(s string) string {
	if c.bmc.Password == "" {
		return s
	}
	return strings.ReplaceAll(s, c.bmc.Password, "***")
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
