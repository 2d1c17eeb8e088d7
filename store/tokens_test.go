package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hassproject/hass/auth"
)

func TestTokensCreateListDelete(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	if ts, err := s.APITokens(ctx); err != nil || len(ts) != 0 {
		t.Fatalf("a new store's tokens: %v %v", ts, err)
	}
	mk := func(name string, role auth.Role) APIToken {
		tok, err := auth.New(name)
		if err != nil {
			t.Fatal(err)
		}
		return APIToken{Name: name, Role: role, SHA256: tok.Hash(), Created: time.Now().UTC().Truncate(time.Second), CreatedBy: "test"}
	}
	first := mk("admin", auth.Admin)
	if err := s.CreateFirstToken(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateFirstToken(ctx, mk("other", auth.Admin)); !errors.Is(err, ErrTokenExists) {
		t.Errorf("a second first token: %v, want ErrTokenExists", err)
	}
	if err := s.CreateToken(ctx, mk("admin", auth.Viewer)); !errors.Is(err, ErrTokenExists) {
		t.Errorf("a second admin: %v, want ErrTokenExists", err)
	}
	if err := s.CreateToken(ctx, mk("ci", auth.Viewer)); err != nil {
		t.Fatal(err)
	}
	got, err := s.APIToken(ctx, "admin")
	if err != nil || got != first {
		t.Errorf("APIToken(admin) = %+v, %v, want %+v", got, err, first)
	}
	ts, err := s.APITokens(ctx)
	if err != nil || len(ts) != 2 || ts[0].Name != "admin" || ts[1].Name != "ci" || ts[1].Role != auth.Viewer {
		t.Errorf("tokens %+v %v", ts, err)
	}
	if err := s.DeleteToken(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteToken(ctx, "ci"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	if _, err := s.APIToken(ctx, "ci"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted token: %v, want ErrNotFound", err)
	}
	for _, bad := range []APIToken{{Name: "Bad", Role: auth.Admin, SHA256: first.SHA256}, {Name: "x", Role: "root", SHA256: first.SHA256}, {Name: "x", Role: auth.Admin, SHA256: "abc"}} {
		if err := s.CreateToken(ctx, bad); err == nil {
			t.Errorf("stored %+v", bad)
		}
	}
	// Nothing but the hash is stored.
	resp, err := s.cli.Get(ctx, tokenPrefix+"admin")
	if err != nil || len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), `"sha256":"`+first.SHA256) {
		t.Errorf("stored %v %v", resp, err)
	}
}
