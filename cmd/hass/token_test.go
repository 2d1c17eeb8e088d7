package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/auth"
	"github.com/hassproject/hass/daemon"
)

// testToken is the token the CLI tests' fake servers accept; TestMain puts it in HASS_TOKEN.
var testToken auth.Token

func TestMain(m *testing.M) {
	var err error
	if testToken, err = auth.New("cli-test"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("HASS_TOKEN", testToken.String())
	os.Unsetenv("HASS_TOKEN_FILE")
	os.Exit(m.Run())
}

// cliAuth accepts testToken only, as an admin.
type cliAuth struct{}

func (cliAuth) Authenticate(_ context.Context, tok string) (api.Principal, error) {
	if tok != testToken.String() {
		return api.Principal{}, api.ErrBadToken
	}
	return api.Principal{Name: testToken.Name, Role: auth.Admin}, nil
}

// runController runs a real controller (hass controller's wiring, embedded etcd, no agent)
// on TCP and returns its API's URL and its data dir.
func runController(t *testing.T) (url, dir string) {
	t.Helper()
	dir = t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Config{HostName: "c1", DataDir: dir, Listen: "127.0.0.1:0", NoAgent: true,
			Logger: slog.New(slog.DiscardHandler), Ready: func(a string) { ready <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case a := <-ready:
		return "http://" + a, dir
	case err := <-done:
		t.Fatalf("controller did not start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("controller not ready in 60 s")
	}
	return "", ""
}

// TestTokenCommands: hass token create|list|revoke against a real controller, the token
// sources in their order, and what each role may do from the CLI.
func TestTokenCommands(t *testing.T) {
	srv, dir := runController(t)
	adminFile := filepath.Join(dir, daemon.AdminTokenFile)
	t.Setenv("HASS_TOKEN", "")

	// No token at all (the default file is hass up's, not this daemon's): a clear error.
	t.Setenv("HASS_TOKEN_FILE", filepath.Join(dir, "nope"))
	if code, _, errs := hass("vm", "list", "--server", srv); code == 0 || !strings.Contains(errs, "HASS_TOKEN_FILE") {
		t.Errorf("missing token file: exit %d, %q", code, errs)
	}
	t.Setenv("HASS_TOKEN_FILE", adminFile)
	if code, _, errs := hass("vm", "list", "--server", srv); code != 0 {
		t.Errorf("HASS_TOKEN_FILE: exit %d, %q", code, errs)
	}
	t.Setenv("HASS_TOKEN_FILE", "")

	code, out, errs := hass("token", "create", "ci", "--role", "viewer", "--server", srv, "--token-file", adminFile)
	if code != 0 || !strings.Contains(errs, "only time it is shown") {
		t.Fatalf("create: exit %d, %q %q", code, out, errs)
	}
	ci, err := auth.Parse(strings.TrimSpace(out))
	if err != nil || ci.Name != "ci" {
		t.Fatalf("create printed %q: %v", out, err)
	}
	code, out, _ = hass("token", "list", "--server", srv, "--token-file", adminFile)
	admin, _ := auth.ReadFile(adminFile)
	if code != 0 || !strings.Contains(out, "ci") || !strings.Contains(out, "viewer") || !strings.Contains(out, "bootstrap") ||
		strings.Contains(out, ci.Secret) || strings.Contains(out, admin.Secret) || strings.Contains(out, ci.Hash()) {
		t.Errorf("list: exit %d:\n%s", code, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"token", "create", "Bad_Name", "--role", "viewer"}, "token name"},
		{[]string{"token", "create", "x", "--role", "root"}, "--role"},
		{[]string{"token", "create", "x"}, "role"},
		{[]string{"token", "create", "ci", "--role", "viewer"}, "exists"},
		{[]string{"token", "revoke", "nobody"}, "no such token"},
	} {
		code, _, errs := hass(append(tc.args, "--server", srv, "--token-file", adminFile)...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, %q, want an error naming %q", tc.args, code, errs, tc.want)
		}
	}

	// The viewer token, from HASS_TOKEN: reads, and is refused what it may not do.
	t.Setenv("HASS_TOKEN", ci.String())
	if code, _, errs := hass("vm", "list", "--server", srv); code != 0 {
		t.Errorf("viewer vm list: exit %d, %q", code, errs)
	}
	if code, _, errs := hass("token", "list", "--server", srv); code == 0 || !strings.Contains(errs, "needs role admin") || !strings.Contains(errs, "has role viewer") {
		t.Errorf("viewer token list: exit %d, %q", code, errs)
	}
	if code, _, errs := hass("vm", "protect", "web", "--server", srv); code == 0 || !strings.Contains(errs, "needs role operator") {
		t.Errorf("viewer protect: exit %d, %q", code, errs)
	}
	// --token-file wins over HASS_TOKEN.
	if code, _, errs := hass("token", "list", "--server", srv, "--token-file", adminFile); code != 0 {
		t.Errorf("--token-file over HASS_TOKEN: exit %d, %q", code, errs)
	}
	t.Setenv("HASS_TOKEN", "hass_garbage")
	if code, _, errs := hass("vm", "list", "--server", srv); code == 0 || !strings.Contains(errs, "HASS_TOKEN") || strings.Contains(errs, "garbage") {
		t.Errorf("malformed HASS_TOKEN: exit %d, %q", code, errs)
	}

	// Revoked: refused at once.
	t.Setenv("HASS_TOKEN", "")
	if code, out, errs := hass("token", "revoke", "ci", "--server", srv, "--token-file", adminFile); code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: exit %d, %q %q", code, out, errs)
	}
	t.Setenv("HASS_TOKEN", ci.String())
	if code, _, errs := hass("vm", "list", "--server", srv); code == 0 || !strings.Contains(errs, "invalid or revoked token") {
		t.Errorf("revoked token: exit %d, %q", code, errs)
	}

	// The audit trail, as hass events shows it.
	t.Setenv("HASS_TOKEN", "")
	code, out, errs = hass("events", "--type", "audit", "--server", srv, "--token-file", adminFile)
	if code != 0 {
		t.Fatalf("events: exit %d, %q", code, errs)
	}
	for _, want := range []string{"token admin (admin): POST /v1/tokens: 201", "token admin (admin): DELETE /v1/tokens/ci: 200", "token admin (admin): POST /v1/tokens: 409"} {
		if !strings.Contains(out, want) {
			t.Errorf("hass events --type audit lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "(viewer)") {
		t.Errorf("a refused request was audited:\n%s", out)
	}
}
