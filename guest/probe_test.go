package guest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// silent returns an address nothing answers, on this machine only: a veth pair whose far
// end, in a network namespace of its own, is up with no address (ARP goes unanswered), with
// 198.18.93.1/30 on the near end; 198.18.93.2 is nobody. Nothing leaves the machine.
func silent(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a veth pair and a network namespace")
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	cleanup := func() {
		exec.Command("ip", "link", "del", "hassprobe0").Run()
		exec.Command("ip", "netns", "del", "hassprobe").Run()
	}
	cleanup()
	t.Cleanup(cleanup)
	run("netns", "add", "hassprobe")
	run("link", "add", "hassprobe0", "type", "veth", "peer", "name", "hassprobe1", "netns", "hassprobe")
	run("addr", "add", "198.18.93.1/30", "dev", "hassprobe0")
	run("link", "set", "hassprobe0", "up")
	run("-n", "hassprobe", "link", "set", "hassprobe1", "up")
	return "198.18.93.2"
}

// The probes against this machine's own loopback: a listening port answers, a closed one
// answers too (refused: the stack is up), an address nobody holds does not.
func TestTCPProbe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx := context.Background()
	if err := TCP(ctx, "127.0.0.1", port, time.Second); err != nil {
		t.Fatalf("listening port: %v", err)
	}
	l.Close()
	if err := TCP(ctx, "127.0.0.1", port, time.Second); err != nil {
		t.Fatalf("closed port (refused) should count as an answer: %v", err)
	}
	nobody := silent(t)
	start := time.Now()
	if err := TCP(ctx, nobody, 22, 300*time.Millisecond); err == nil {
		t.Fatalf("%s answered", nobody)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the probe took %s with a 300ms timeout", d)
	}
}

func TestICMPProbe(t *testing.T) {
	p := NewPinger()
	ctx := context.Background()
	if err := p.Ping(ctx, "127.0.0.1", time.Second); err != nil {
		t.Fatalf("ping 127.0.0.1: %v (needs root, CAP_NET_RAW or a ping socket)", err)
	}
	nobody := silent(t)
	start := time.Now()
	if err := p.Ping(ctx, nobody, 300*time.Millisecond); err == nil {
		t.Fatalf("%s answered", nobody)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the probe took %s with a 300ms timeout", d)
	}
	if err := p.Ping(ctx, "not-an-ip", time.Second); err == nil {
		t.Fatal("a bad address was pinged")
	}
}
