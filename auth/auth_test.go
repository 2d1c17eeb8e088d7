package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewParseMatches(t *testing.T) {
	a, err := New("ci-bot")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New("ci-bot")
	if a.Secret == b.Secret || len(a.Secret) != 43 {
		t.Fatalf("secrets %q %q: want two different 43-character secrets", a.Secret, b.Secret)
	}
	s := a.String()
	if !strings.HasPrefix(s, "hass_ci-bot.") {
		t.Errorf("token %q", s)
	}
	p, err := Parse(s)
	if err != nil || p != a {
		t.Fatalf("Parse(String()) = %+v, %v", p, err)
	}
	if !p.Matches(a.Hash()) || p.Matches(b.Hash()) || p.Matches("") || p.Matches(a.Secret) {
		t.Errorf("Matches: a token matches its own hash only")
	}
	if len(a.Hash()) != 64 || strings.Contains(a.Hash(), a.Secret) {
		t.Errorf("hash %q", a.Hash())
	}
}

func TestParseRefuses(t *testing.T) {
	good, _ := New("x")
	for _, s := range []string{"", "hass_", "hass_x", "hass_x.", "x." + good.Secret, "hass_X." + good.Secret,
		"hass_x." + good.Secret + "=", "hass_x." + good.Secret[:42], "hass_x." + good.Secret + "a", "Bearer " + good.String(),
		"hass_-x." + good.Secret, "hass_x.y." + good.Secret} {
		if _, err := Parse(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) = %v, want ErrMalformed", s, err)
		}
		if _, err := Parse(s); err != nil && strings.Contains(err.Error(), good.Secret[:20]) {
			t.Errorf("the error repeats the token: %v", err)
		}
	}
}

func TestNames(t *testing.T) {
	for _, n := range []string{"a", "admin", "ci-2", strings.Repeat("a", 63)} {
		if err := CheckName(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	for _, n := range []string{"", "-a", "a-", "A", "a_b", "a.b", "a/b", strings.Repeat("a", 64)} {
		if err := CheckName(n); err == nil || !strings.Contains(err.Error(), "token name") {
			t.Errorf("%q: %v, want an error naming the token name", n, err)
		}
		if _, err := New(n); err == nil {
			t.Errorf("New(%q) took it", n)
		}
	}
}

func TestRoles(t *testing.T) {
	for _, tc := range []struct {
		have, need Role
		ok         bool
	}{
		{Admin, Admin, true}, {Admin, Operator, true}, {Admin, Viewer, true},
		{Operator, Admin, false}, {Operator, Operator, true}, {Operator, Viewer, true},
		{Viewer, Admin, false}, {Viewer, Operator, false}, {Viewer, Viewer, true},
		{"root", Viewer, false}, {"", Viewer, false},
	} {
		if got := tc.have.Allows(tc.need); got != tc.ok {
			t.Errorf("%q allows %q: %v, want %v", tc.have, tc.need, got, tc.ok)
		}
	}
	if _, err := ParseRole("superuser"); err == nil || !strings.Contains(err.Error(), `role "superuser"`) {
		t.Errorf("ParseRole: %v", err)
	}
	if r, err := ParseRole("operator"); err != nil || r != Operator {
		t.Errorf("ParseRole(operator) = %q, %v", r, err)
	}
}

func TestSecretStaysOutOfLogs(t *testing.T) {
	tok, _ := New("quiet")
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "token", tok)
	for _, s := range []string{buf.String(), fmt.Sprintf("%#v", tok)} {
		if strings.Contains(s, tok.Secret) || !strings.Contains(s, "quiet") {
			t.Errorf("logged as %q", s)
		}
	}
}

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "admin.token")
	tok, _ := New("admin")
	if err := WriteNewFile(path, tok); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v, want 0600", fi.Mode(), err)
	}
	got, err := ReadFile(path)
	if err != nil || got != tok {
		t.Fatalf("ReadFile = %+v, %v", got, err)
	}
	other, _ := New("admin")
	if err := WriteNewFile(path, other); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second write: %v, want fs.ErrExist", err)
	}
	if got, _ := ReadFile(path); got != tok {
		t.Errorf("the file was overwritten")
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("hass_admin.short-secret\n"), 0o600)
	if _, err := ReadFile(bad); err == nil || strings.Contains(err.Error(), "short-secret") || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad file: %v, want an error naming the file, not its content", err)
	}
}
