package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/auth"
	"github.com/hassproject/hass/store"
)

// TestAuthEndToEnd: a real daemon bootstraps an admin token into DATADIR/admin.token (0600);
// tokens of each role are created through the API, refused where their role is too weak,
// refused at once once revoked; mutating requests land in the event log as audit events
// with their token's name; and no token secret nor BMC password is ever in the daemon's log
// (at debug level), the event log or an API answer.
func TestAuthEndToEnd(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	debug := &lockedBuf{}
	drv := newFakeDriver()
	drv.add("vm1", true)
	r := start(t, drv, dir, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(debug, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	path := filepath.Join(dir, AdminTokenFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v, mode %v; want 0600", err, fi.Mode())
	}
	admin := r.cli
	var secrets []string
	tok, _ := auth.Parse(r.token)
	secrets = append(secrets, tok.Secret, tok.Hash())
	clients := map[auth.Role]*api.Client{}
	for _, role := range []auth.Role{auth.Viewer, auth.Operator} {
		nt, err := admin.CreateToken(ctx, api.TokenRequest{Name: "t-" + string(role), Role: string(role)})
		if err != nil {
			t.Fatalf("create %s token: %v", role, err)
		}
		if nt.CreatedBy != "admin" || nt.Role != string(role) {
			t.Errorf("created %+v", nt.TokenInfo)
		}
		tk, err := auth.Parse(nt.Token)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, tk.Secret)
		clients[role] = api.NewClient("http://"+r.addr, nil).WithToken(nt.Token)
	}
	if _, err := admin.CreateToken(ctx, api.TokenRequest{Name: "t-viewer", Role: "admin"}); !isCode(err, api.CodeConflict) {
		t.Errorf("a second t-viewer: %v, want conflict", err)
	}
	const bmcPassword = "bmc-Pa55-w0rd-never-shown"
	secrets = append(secrets, bmcPassword)
	if _, err := admin.PutHost(ctx, "h1", api.HostRequest{BMC: &api.BMCRequest{Addr: "127.0.0.1:1", User: "root", Password: bmcPassword}}); err != nil {
		t.Fatalf("put host with a BMC: %v", err)
	}

	// Roles.
	if _, err := clients[auth.Viewer].VMs(ctx); err != nil {
		t.Errorf("viewer lists VMs: %v", err)
	}
	if _, err := clients[auth.Viewer].Protect(ctx, "vm1", api.ProtectRequest{}); !isCode(err, api.CodeForbidden) ||
		!strings.Contains(err.Error(), "needs role operator") || !strings.Contains(err.Error(), "has role viewer") {
		t.Errorf("viewer protects: %v, want forbidden naming operator and viewer", err)
	}
	if _, err := clients[auth.Operator].Protect(ctx, "vm1", api.ProtectRequest{}); err != nil {
		t.Errorf("operator protects: %v", err)
	}
	if _, err := clients[auth.Operator].Tokens(ctx); !isCode(err, api.CodeForbidden) {
		t.Errorf("operator lists tokens: %v, want forbidden", err)
	}
	if err := api.NewClient("http://"+r.addr, nil).Health(ctx); err != nil {
		t.Errorf("/healthz without a token: %v", err)
	}
	if _, err := api.NewClient("http://"+r.addr, nil).VMs(ctx); !isCode(err, api.CodeUnauthenticated) {
		t.Errorf("no token: %v, want unauthenticated", err)
	}
	// The last admin token stays: without it nobody could make tokens any more.
	if err := admin.RevokeToken(ctx, "admin"); !isCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "last admin token") {
		t.Errorf("revoke the last admin token: %v, want conflict", err)
	}
	// A revoke takes at once on the controller that did it (the token was just cached).
	if err := admin.RevokeToken(ctx, "t-viewer"); err != nil {
		t.Fatal(err)
	}
	if _, err := clients[auth.Viewer].VMs(ctx); !isCode(err, api.CodeUnauthenticated) {
		t.Errorf("revoked token: %v, want unauthenticated", err)
	}
	list, err := admin.Tokens(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "admin" || list[1].Name != "t-operator" {
		t.Errorf("tokens: %+v %v, want admin and t-operator", list, err)
	}

	// The audit trail.
	evs, err := admin.Events(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var audits []string
	for _, e := range evs {
		if e.Type == "audit" {
			audits = append(audits, e.Msg)
		}
	}
	for _, want := range []string{
		"token admin (admin): POST /v1/tokens: 201",
		"token admin (admin): POST /v1/tokens: 409",
		"token admin (admin): PUT /v1/hosts/h1: 200",
		"token t-operator (operator): PUT /v1/vms/vm1/protection: 200",
		"token admin (admin): DELETE /v1/tokens/t-viewer: 200",
	} {
		if !containsString(audits, want) {
			t.Errorf("no audit event %q in %q", want, audits)
		}
	}
	for _, a := range audits {
		if strings.Contains(a, "t-viewer (viewer)") || strings.Contains(a, "GET ") {
			t.Errorf("audited a refused or read-only request: %q", a)
		}
	}
	if !strings.Contains(debug.String(), "request refused for its token's role") {
		t.Errorf("the 403 was not logged")
	}

	// Secrets nowhere: daemon log, event log, API answers.
	evJSON, _ := json.Marshal(evs)
	hosts, _ := admin.Hosts(ctx)
	hostsJSON, _ := json.Marshal(hosts)
	r.stop()
	logText := debug.String()
	for _, s := range secrets {
		for where, text := range map[string]string{"daemon log": logText, "event log": string(evJSON), "hosts answer": string(hostsJSON)} {
			if strings.Contains(text, s) {
				t.Errorf("a secret (%d characters) is in the %s", len(s), where)
			}
		}
	}
	if !strings.Contains(logText, "admin_token_file=") {
		t.Errorf("the bootstrap file's path is not logged")
	}

	// A restart keeps the file as it is and creates no other token.
	before, _ := os.ReadFile(path)
	r = start(t, newFakeDriver(), dir, nil)
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Errorf("the admin token file changed on restart")
	}
	if list, err := r.cli.Tokens(ctx); err != nil || len(list) != 2 {
		t.Errorf("after restart: %+v %v", list, err)
	}
	if !strings.Contains(r.log.String(), "API tokens exist") {
		t.Errorf("restart did not say tokens exist:\n%s", r.log)
	}
}

// TestBootstrapFromGivenFile: --admin-token-file naming an existing token file makes that
// token the first admin token (how a multi-controller rig knows it in advance).
func TestBootstrapFromGivenFile(t *testing.T) {
	tok, err := auth.New("rig")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "rig.token")
	if err := auth.WriteNewFile(path, tok); err != nil {
		t.Fatal(err)
	}
	r := start(t, newFakeDriver(), t.TempDir(), func(c *Config) { c.AdminTokenFile = path })
	if r.token != tok.String() {
		t.Fatalf("the daemon's token is not the file's")
	}
	list, err := r.cli.Tokens(context.Background())
	if err != nil || len(list) != 1 || list[0].Name != "rig" || list[0].Role != "admin" || list[0].CreatedBy != "bootstrap" {
		t.Errorf("tokens: %+v %v", list, err)
	}
	if err := auth.WriteNewFile(path, tok); err == nil {
		t.Errorf("WriteNewFile replaced an existing file")
	}
}

// TestBootstrapRace: of several controllers bootstrapping one store at once, exactly one
// stores its token and keeps its file; the others leave no file behind.
func TestBootstrapRace(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenEmbeddedConfig(ctx, store.EmbeddedConfig{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler), MinFree: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dirs := make([]string, 4)
	won := make([]bool, len(dirs))
	var wg sync.WaitGroup
	for i := range dirs {
		dirs[i] = t.TempDir()
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			won[i], err = bootstrapAdmin(ctx, st, filepath.Join(dirs[i], AdminTokenFile), slog.New(slog.DiscardHandler))
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	winners := 0
	for i, d := range dirs {
		_, err := os.Stat(filepath.Join(d, AdminTokenFile))
		if won[i] {
			winners++
			tok, rerr := auth.ReadFile(filepath.Join(d, AdminTokenFile))
			stored, serr := st.APIToken(ctx, BootstrapTokenName)
			if rerr != nil || serr != nil || !tok.Matches(stored.SHA256) {
				t.Errorf("the winner's file does not hold the stored token: %v %v", rerr, serr)
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a loser left a token file: %v", err)
		}
	}
	if winners != 1 {
		t.Errorf("%d controllers stored the first token, want 1", winners)
	}
}

func isCode(err error, code string) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Code == code
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestBootstrapBadFile: a token file that holds no token stops the daemon with an error
// naming the file (and not its content), rather than a daemon nobody can use.
func TestBootstrapBadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(path, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := Run(ctx, Config{HostName: "c1", DataDir: t.TempDir(), Listen: "127.0.0.1:0", NoAgent: true,
		AdminTokenFile: path, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "hunter2") || ctx.Err() != nil {
		t.Errorf("Run: %v, want an error naming %s", err, path)
	}
}
