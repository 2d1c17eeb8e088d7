package guest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// TCP connects to addr:port within timeout: the guest network layer's tcp probe. A refused
// connection counts as an answer (the guest's network stack is up and said no); only silence
// (a timeout) or an unreachable network is a miss.
func TCP(ctx context.Context, addr string, port int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err == nil {
		c.Close()
		return nil
	}
	if errors.Is(err, refused) {
		return nil
	}
	return fmt.Errorf("tcp probe %s: %w", net.JoinHostPort(addr, strconv.Itoa(port)), err)
}

var refused = errConnRefused()

// Pinger sends ICMP echo requests: the guest network layer's icmp probe. It uses a raw ICMP
// socket (root, or CAP_NET_RAW), or an unprivileged ping socket where the system allows one
// (net.ipv4.ping_group_range). Safe for concurrent use.
type Pinger struct {
	id  int
	seq atomic.Uint32
}

// NewPinger returns a pinger whose echo requests carry this process's identifier.
func NewPinger() *Pinger { return &Pinger{id: os.Getpid() & 0xffff} }

// Ping sends one echo request to addr and waits up to timeout for its reply.
func (p *Pinger) Ping(ctx context.Context, addr string, timeout time.Duration) error {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return fmt.Errorf("icmp probe %q: not an IP address", addr)
	}
	ip = ip.Unmap()
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	network, proto, typ, reply := "ip4:icmp", 1, icmp.Type(ipv4.ICMPTypeEcho), icmp.Type(ipv4.ICMPTypeEchoReply)
	if ip.Is6() {
		network, proto, typ, reply = "ip6:ipv6-icmp", 58, ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	c, err := icmp.ListenPacket(network, "")
	privileged := err == nil
	if err != nil {
		udp := "udp4"
		if ip.Is6() {
			udp = "udp6"
		}
		c, err = icmp.ListenPacket(udp, "")
		if err != nil {
			return fmt.Errorf("icmp probe %s: no raw or ping socket: %w", addr, err)
		}
	}
	defer c.Close()
	if err := c.SetDeadline(deadline); err != nil {
		return fmt.Errorf("icmp probe %s: %w", addr, err)
	}
	seq := int(p.seq.Add(1) & 0xffff)
	payload := []byte("hass guest network probe")
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: p.id, Seq: seq, Data: payload}}
	wire, err := msg.Marshal(nil)
	if err != nil {
		return fmt.Errorf("icmp probe %s: %w", addr, err)
	}
	var dst net.Addr = &net.IPAddr{IP: ip.AsSlice()}
	if !privileged {
		dst = &net.UDPAddr{IP: ip.AsSlice()}
	}
	if _, err := c.WriteTo(wire, dst); err != nil {
		return fmt.Errorf("icmp probe %s: %w", addr, err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("icmp probe %s: no echo reply: %w", addr, err)
		}
		if !sameHost(from, ip) {
			continue
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != reply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		// A ping socket rewrites the identifier (the kernel owns it): match the sequence only.
		if !ok || e.Seq != seq || (privileged && e.ID != p.id) {
			continue
		}
		return nil
	}
}

func sameHost(a net.Addr, ip netip.Addr) bool {
	var got net.IP
	switch x := a.(type) {
	case *net.IPAddr:
		got = x.IP
	case *net.UDPAddr:
		got = x.IP
	default:
		return false
	}
	g, ok := netip.AddrFromSlice(got)
	return ok && g.Unmap() == ip
}
