// Package pki makes the small certificate authority and the certificates a hass cluster needs
// where a site has no PKI of its own (`hass certs init`): one CA, and for each host a key and a
// certificate good both for serving (hass's API, etcd's client and peer ports) and as a client
// (the agents' and controllers' etcd connections, mutual TLS). Keys are ECDSA P-256, written
// 0600; an existing CA is reused, an existing certificate kept unless it is to be replaced.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Files names a certificate and its key.
type Files struct{ Cert, Key string }

// CAFiles are the CA's files in dir.
func CAFiles(dir string) Files {
	return Files{Cert: filepath.Join(dir, "ca.crt"), Key: filepath.Join(dir, "ca.key")}
}

// HostFiles are a host's files in dir.
func HostFiles(dir, host string) Files {
	return Files{Cert: filepath.Join(dir, host+".crt"), Key: filepath.Join(dir, host+".key")}
}

// CA is a loaded certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// LoadOrCreateCA loads the CA in dir, or creates it (valid for validity) when there is none.
// created says which.
func LoadOrCreateCA(dir, name string, validity time.Duration) (ca CA, created bool, err error) {
	f := CAFiles(dir)
	if _, err := os.Stat(f.Cert); err == nil {
		ca, err := loadCA(f)
		return ca, false, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return CA{}, false, fmt.Errorf("pki: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CA{}, false, fmt.Errorf("pki: ca key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"hass"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return CA{}, false, fmt.Errorf("pki: ca certificate: %w", err)
	}
	if err := write(f, der, key); err != nil {
		return CA{}, false, err
	}
	cert, _ := x509.ParseCertificate(der)
	return CA{Cert: cert, Key: key}, true, nil
}

func loadCA(f Files) (CA, error) {
	cert, err := readCert(f.Cert)
	if err != nil {
		return CA{}, err
	}
	if !cert.IsCA {
		return CA{}, fmt.Errorf("pki: %s: not a CA certificate", f.Cert)
	}
	kb, err := os.ReadFile(f.Key)
	if err != nil {
		return CA{}, fmt.Errorf("pki: the CA's key: %w", err)
	}
	blk, _ := pem.Decode(kb)
	if blk == nil {
		return CA{}, fmt.Errorf("pki: %s: no PEM block", f.Key)
	}
	key, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return CA{}, fmt.Errorf("pki: %s: %w", f.Key, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return CA{}, fmt.Errorf("pki: %s does not belong to %s", f.Key, f.Cert)
	}
	return CA{Cert: cert, Key: key}, nil
}

// Issue makes host's key and certificate, signed by ca: its names are the host's name,
// "localhost" and the given DNS names and addresses (127.0.0.1 and ::1 always), good for
// serving and as a client, valid for validity.
func (ca CA) Issue(dir, host string, dns []string, ips []net.IP, validity time.Duration) (Files, error) {
	if host == "" {
		return Files{}, errors.New("pki: a certificate needs a host name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Files{}, fmt.Errorf("pki: key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: host, Organization: []string{"hass"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     append([]string{host, "localhost"}, dns...),
		IPAddresses:  append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ips...),
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return Files{}, fmt.Errorf("pki: certificate of %s: %w", host, err)
	}
	f := HostFiles(dir, host)
	return f, write(f, der, key)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func write(f Files, der []byte, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := writeFile(f.Key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return writeFile(f.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeFile writes through a temporary file renamed into place: never half a key.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("pki: %s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	return c, nil
}
