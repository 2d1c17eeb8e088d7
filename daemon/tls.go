package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
)

// APITLS is the API's TLS: the server's certificate and key, and the CA that signs the other
// controllers' certificates (a follower forwarding a request to the leader shows its own, and
// checks the leader's against the CA). Clients of the API need no certificate of their own:
// their token says who they are.
type APITLS struct {
	Cert, Key, CA string
}

func (t *APITLS) load() (cert tls.Certificate, pool *x509.CertPool, err error) {
	if t.Cert == "" || t.Key == "" || t.CA == "" {
		return cert, nil, errors.New("API TLS: give the certificate, its key and the CA")
	}
	if cert, err = tls.LoadX509KeyPair(t.Cert, t.Key); err != nil {
		return cert, nil, fmt.Errorf("API TLS: %s and %s: %w", t.Cert, t.Key, err)
	}
	pem, err := os.ReadFile(t.CA)
	if err != nil {
		return cert, nil, fmt.Errorf("API TLS ca: %w", err)
	}
	pool = x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return cert, nil, fmt.Errorf("API TLS ca %s: no certificate in it", t.CA)
	}
	return cert, pool, nil
}

// serverListener wraps a TCP listener in TLS (1.2 at least); a client certificate is checked
// against the CA when one is shown.
func (t *APITLS) serverListener(ln net.Listener) (net.Listener, error) {
	cert, pool, err := t.load()
	if err != nil {
		return nil, err
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
		ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12}), nil
}

// transport is what a follower forwards to the leader with: the CA to check the leader, its
// own certificate to show.
func (t *APITLS) transport() (*http.Transport, error) {
	cert, pool, err := t.load()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr, nil
}
