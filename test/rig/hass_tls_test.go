package rig_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/test/rig"
)

// TestHassTLS runs the whole cluster with TLS wherever it crosses the rig's network
// (certificates from hass certs init): etcd's peer and client traffic over mutual TLS, the
// API over https (followers forwarding to the leader over TLS). A host lost with protected
// VMs on it is recovered as without TLS; etcd refuses a client without a certificate; the
// API refuses plain http.
func TestHassTLS(t *testing.T) {
	r := rig.Up(t)
	c := startClusterWith(t, r, clusterOpts{tls: true}) // every agent up: they reached etcd over TLS
	vms := c.protectOn(4, 2)
	lost := time.Now()
	must(t, r.PowerOff(4))
	c.watchExactlyOnce(vms, 4, lost, 90*time.Second)
	for vm, d := range c.recoveredAfter(vms, lost) {
		t.Logf("measured: over TLS, host power lost -> %s running on a survivor after %s", vm, d.Round(time.Millisecond))
	}
	l := c.leader()
	for _, h := range ctlHosts {
		if h == l {
			continue
		}
		if out, err := c.r.Exec(1, append([]string{c.bin, "status"}, c.clientArgs(h)...)...); err != nil ||
			!strings.Contains(out, fmt.Sprintf("answered by c%d", int(l))) {
			t.Errorf("hass status through follower c%d over TLS: %v\n%s", int(h), err, out)
		}
	}
	ca := filepath.Join(c.pki, "ca.crt")
	crt, key := filepath.Join(c.pki, "h3.crt"), filepath.Join(c.pki, "h3.key")
	etcd := fmt.Sprintf("https://%s:%d/health", r.Addr(1), cliPort)
	if out, err := r.Exec(3, "curl", "--noproxy", "*", "-sS", "-m", "10", "--cacert", ca, "--cert", crt, "--key", key, etcd); err != nil || !strings.Contains(out, "true") {
		t.Errorf("etcd with a certificate of the CA: %v: %s", err, out)
	}
	if out, err := r.Exec(3, "curl", "--noproxy", "*", "-sS", "-m", "10", "--cacert", ca, etcd); err == nil && strings.Contains(out, "true") {
		t.Errorf("etcd answered a client without a certificate: %s", out)
	}
	api := fmt.Sprintf("http://%s:%d/v1/status", r.Addr(l), apiPort)
	if out, err := r.Exec(3, "curl", "--noproxy", "*", "-sS", "-m", "10", "-H", "Authorization: Bearer x", api); err == nil && strings.Contains(out, "leader") {
		t.Errorf("the API answered plain http: %s", out)
	}
}
