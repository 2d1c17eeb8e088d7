package store

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// TLSFiles are the files of etcd's TLS where it crosses a network: the host's certificate and
// key (it serves with them, and shows them as a client) and the CA that signs every member's
// and client's certificate (`hass certs init` makes all three). Every side checks the other's
// certificate against the CA: mutual TLS between members, and between agents, controllers
// and members.
type TLSFiles struct {
	Cert, Key, CA string
}

// Validate says which file is missing or unreadable.
func (t TLSFiles) Validate() error {
	for _, f := range []struct{ flag, path string }{{"cert", t.Cert}, {"key", t.Key}, {"ca", t.CA}} {
		if f.path == "" {
			return fmt.Errorf("etcd TLS: no %s file", f.flag)
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("etcd TLS %s: %w", f.flag, err)
		}
	}
	return nil
}

// clientConfig is the TLS a client of etcd dials with: its certificate, the CA it trusts.
func (t TLSFiles) clientConfig() (*tls.Config, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("etcd TLS: %s and %s: %w", t.Cert, t.Key, err)
	}
	pem, err := os.ReadFile(t.CA)
	if err != nil {
		return nil, fmt.Errorf("etcd TLS ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("etcd TLS ca " + t.CA + ": no certificate in it")
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// serverInfo is how an embedded member serves clients or peers over TLS: it asks for a
// certificate signed by the CA and refuses a connection without one.
func (t TLSFiles) serverInfo() transport.TLSInfo {
	return transport.TLSInfo{CertFile: t.Cert, KeyFile: t.Key, TrustedCAFile: t.CA, ClientCertAuth: true}
}
