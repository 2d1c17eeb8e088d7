package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/daemon"
	"github.com/hassproject/hass/pki"
)

// The API over TLS: a controller with a certificate of `hass certs init`'s CA serves https;
// the CLI reaches it with --ca (or HASS_CA) and a token, not without the CA, and not over
// plain http.
func TestAPIOverTLS(t *testing.T) {
	pkiDir := t.TempDir()
	if code, _, errs := hass("certs", "init", "--dir", pkiDir, "--hosts", "c1"); code != 0 {
		t.Fatalf("certs init: %s", errs)
	}
	f := pki.HostFiles(pkiDir, "c1")
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Config{HostName: "c1", DataDir: dir, Listen: "127.0.0.1:0", NoAgent: true,
			APITLS: &daemon.APITLS{Cert: f.Cert, Key: f.Key, CA: pki.CAFiles(pkiDir).Cert},
			Logger: slog.New(slog.DiscardHandler), Ready: func(a string) { ready <- a }})
	}()
	defer func() { cancel(); <-done }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("controller: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("controller not ready in 60 s")
	}
	tok := filepath.Join(dir, daemon.AdminTokenFile)
	ca := pki.CAFiles(pkiDir).Cert
	if code, out, errs := hass("status", "--server", "https://"+addr, "--ca", ca, "--token-file", tok); code != 0 || !strings.Contains(out, "c1") {
		t.Errorf("https with the CA: exit %d: %s %s", code, out, errs)
	}
	t.Setenv("HASS_CA", ca)
	if code, _, errs := hass("vm", "list", "--server", "https://"+addr, "--token-file", tok); code != 0 {
		t.Errorf("https with HASS_CA: exit %d: %s", code, errs)
	}
	t.Setenv("HASS_CA", "")
	if code, _, errs := hass("status", "--server", "https://"+addr, "--token-file", tok); code == 0 || !strings.Contains(errs, "certificate") {
		t.Errorf("https without the CA: exit %d: %s", code, errs)
	}
	if code, _, _ := hass("status", "--server", "http://"+addr, "--token-file", tok); code == 0 {
		t.Error("plain http to the TLS port was answered")
	}
	if code, _, errs := hass("status", "--server", "https://"+addr, "--ca", tok, "--token-file", tok); code != 2 || !strings.Contains(errs, "--ca") {
		t.Errorf("a CA file with no certificate: exit %d: %s", code, errs)
	}
}
