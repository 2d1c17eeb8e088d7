package pki

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestCAIsMadeOnceAndCertsVerify(t *testing.T) {
	dir := t.TempDir()
	ca, created, err := LoadOrCreateCA(dir, "hass test CA", 24*time.Hour)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	again, created, err := LoadOrCreateCA(dir, "ignored", 24*time.Hour)
	if err != nil || created || again.Cert.SerialNumber.Cmp(ca.Cert.SerialNumber) != 0 {
		t.Fatalf("load: created=%v err=%v", created, err)
	}
	if st, _ := os.Stat(CAFiles(dir).Key); st.Mode().Perm() != 0o600 {
		t.Errorf("ca.key mode %v", st.Mode().Perm())
	}
	f, err := ca.Issue(dir, "h1", []string{"h1.example"}, []net.IP{net.ParseIP("10.0.0.1")}, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(f.Key); st.Mode().Perm() != 0o600 {
		t.Errorf("h1.key mode %v", st.Mode().Perm())
	}
	cert, err := readCert(f.Cert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, name := range []string{"h1", "h1.example", "localhost", "10.0.0.1", "127.0.0.1"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("serving as %s: %v", name, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("as a client: %v", err)
	}
	if cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("the certificate outlives its CA")
	}
}

func TestBrokenCAIsRefused(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := LoadOrCreateCA(dir, "a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if _, _, err := LoadOrCreateCA(other, "b", time.Hour); err != nil {
		t.Fatal(err)
	}
	// a's certificate with b's key
	b, _ := os.ReadFile(CAFiles(other).Key)
	if err := os.WriteFile(CAFiles(dir).Key, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateCA(dir, "a", time.Hour); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("a key of another CA: %v", err)
	}
	if err := os.WriteFile(CAFiles(dir).Cert, []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateCA(dir, "a", time.Hour); err == nil || !strings.Contains(err.Error(), "ca.crt") {
		t.Errorf("junk for a certificate: %v", err)
	}
	_ = ca
}

// Two hosts' certificates do mutual TLS with each other; a host of another CA is refused.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := LoadOrCreateCA(dir, "hass", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f1, _ := ca.Issue(dir, "h1", nil, nil, time.Hour)
	f2, _ := ca.Issue(dir, "h2", nil, nil, time.Hour)
	odir := t.TempDir()
	oca, _, _ := LoadOrCreateCA(odir, "other", time.Hour)
	fx, _ := oca.Issue(odir, "intruder", nil, nil, time.Hour)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	load := func(f Files) tls.Certificate {
		c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{load(f1)}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = c.Write([]byte("ok")); _ = c.(*tls.Conn).Handshake() }()
		}
	}()
	dial := func(f Files) error {
		c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{Certificates: []tls.Certificate{load(f)}, RootCAs: pool, ServerName: "h1", MinVersion: tls.VersionTLS13})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = io.ReadAll(c)
		return err
	}
	if err := dial(f2); err != nil {
		t.Errorf("h2 to h1: %v", err)
	}
	if err := dial(fx); err == nil {
		t.Errorf("a certificate of another CA was let in")
	}
}
