package rig

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// LeakWatch captures, on the root namespace's default-route interfaces, every frame that
// carries an address of the rig's subnet (IPv4 source or destination, ARP sender or
// target). Such a frame would be rig traffic leaving (or entering) the machine: a test
// wraps what it does in WatchLeaks/Stop and expects Stop to return nothing.
type LeakWatch struct {
	subnet *net.IPNet
	fds    []int
	devs   []string
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	seen   []string
	frames int
}

// DefaultRouteDevices lists the root namespace's interfaces that carry a default route
// (IPv4, main table): where a leaked packet would go out.
func DefaultRouteDevices() ([]string, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var devs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) > 2 && fl[1] == "00000000" && fl[0] != "Iface" {
			devs = append(devs, fl[0])
		}
	}
	return devs, sc.Err()
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// WatchLeaks starts capturing (AF_PACKET, all protocols) on the default-route interfaces.
func (r *Rig) WatchLeaks() (*LeakWatch, error) {
	devs, err := DefaultRouteDevices()
	if err != nil {
		return nil, err
	}
	if len(devs) == 0 {
		return nil, errors.New("rig: no default route in the root namespace: nothing to watch")
	}
	return r.Watch(devs...)
}

// Watch captures frames with a rig address on the given root-namespace interfaces (for
// example the root link's, to see that the capture works).
func (r *Rig) Watch(devs ...string) (*LeakWatch, error) {
	_, subnet, err := net.ParseCIDR(r.Net + ".0/24")
	if err != nil {
		return nil, err
	}
	w := &LeakWatch{subnet: subnet, stop: make(chan struct{}), devs: devs}
	for _, d := range devs {
		ifi, err := net.InterfaceByName(d)
		if err != nil {
			w.Stop()
			return nil, err
		}
		typ, _ := os.ReadFile("/sys/class/net/" + d + "/type")
		ether := strings.TrimSpace(string(typ)) == "1" // ARPHRD_ETHER; else raw IP frames
		fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, int(htons(syscall.ETH_P_ALL)))
		if err != nil {
			w.Stop()
			return nil, fmt.Errorf("rig: packet socket: %w", err)
		}
		if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			syscall.Close(fd)
			w.Stop()
			return nil, fmt.Errorf("rig: bind packet socket to %s: %w", d, err)
		}
		tv := syscall.Timeval{Usec: 50000}
		_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
		_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<20)
		w.fds = append(w.fds, fd)
		w.wg.Add(1)
		go w.read(fd, d, ether)
	}
	return w, nil
}

func (w *LeakWatch) read(fd int, dev string, ether bool) {
	defer w.wg.Done()
	buf := make([]byte, 65536)
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		n, from, err := syscall.Recvfrom(fd, buf, syscall.MSG_TRUNC)
		if err != nil || n <= 0 {
			continue
		}
		if n > len(buf) {
			n = len(buf)
		}
		dir := "in"
		if ll, ok := from.(*syscall.SockaddrLinklayer); ok && ll.Pkttype == 4 { // PACKET_OUTGOING
			dir = "out"
		}
		if s := w.match(buf[:n], ether); s != "" {
			w.mu.Lock()
			if len(w.seen) < 50 {
				w.seen = append(w.seen, fmt.Sprintf("%s %s: %s", dev, dir, s))
			}
			w.mu.Unlock()
		}
		w.mu.Lock()
		w.frames++
		w.mu.Unlock()
	}
}

// match describes a frame that carries a subnet address, or returns "".
func (w *LeakWatch) match(b []byte, ether bool) string {
	off, proto := 0, uint16(0x0800)
	if ether {
		if len(b) < 14 {
			return ""
		}
		off, proto = 14, uint16(b[12])<<8|uint16(b[13])
		for (proto == 0x8100 || proto == 0x88a8) && len(b) >= off+4 {
			proto = uint16(b[off+2])<<8 | uint16(b[off+3])
			off += 4
		}
	} else if len(b) > 0 && b[0]>>4 != 4 {
		return ""
	}
	switch proto {
	case 0x0800:
		if len(b) < off+20 {
			return ""
		}
		src, dst := net.IP(b[off+12:off+16]), net.IP(b[off+16:off+20])
		if w.subnet.Contains(src) || w.subnet.Contains(dst) {
			return fmt.Sprintf("IPv4 %s -> %s proto %d", src, dst, b[off+9])
		}
	case 0x0806:
		if len(b) < off+28 {
			return ""
		}
		spa, tpa := net.IP(b[off+14:off+18]), net.IP(b[off+24:off+28])
		if w.subnet.Contains(spa) || w.subnet.Contains(tpa) {
			return fmt.Sprintf("ARP %s asks/tells %s", spa, tpa)
		}
	}
	return ""
}

// Stop ends the capture and returns the frames that carried a subnet address (nil: none),
// and how many frames it saw in all (a sign that it was capturing).
func (w *LeakWatch) Stop() (leaks []string, frames int) {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
	for _, fd := range w.fds {
		syscall.Close(fd)
	}
	w.fds = nil
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen, w.frames
}

// Devices are the interfaces watched.
func (w *LeakWatch) Devices() []string { return w.devs }

// ProbeSubnet tries, from this (root namespace) process, a TCP connection to port on every
// address of the subnet, each with timeout, and returns the outcome per address:
// "unreachable" (failed at once: no route to host or network unreachable), "connected",
// "refused", or the error and how long it took.
func (r *Rig) ProbeSubnet(port int, timeout time.Duration) map[string]string {
	res := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for k := 0; k < 256; k++ {
		addr := fmt.Sprintf("%s.%d", r.Net, k)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			start := time.Now()
			c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, fmt.Sprint(port)), timeout)
			took := time.Since(start)
			out := ""
			switch {
			case err == nil:
				c.Close()
				out = "connected"
			case errors.Is(err, syscall.ECONNREFUSED):
				out = "refused"
			case (errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)) && took < timeout/2:
				out = "unreachable"
			default:
				out = fmt.Sprintf("%v after %s", err, took.Round(time.Millisecond))
			}
			mu.Lock()
			res[addr] = out
			mu.Unlock()
		}()
	}
	wg.Wait()
	return res
}
