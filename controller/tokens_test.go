package controller

import (
	"sync"
	"testing"
	"time"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/auth"
	"github.com/hassproject/hass/store"
)

// TestTokenCacheTTL: a cached token is trusted for less than TokenCacheTTL, then read again;
// drop (a revoke here) forgets it at once.
func TestTokenCacheTTL(t *testing.T) {
	if TokenCacheTTL > 2*time.Second {
		t.Fatalf("TokenCacheTTL %s: a revoke must take within 2 s", TokenCacheTTL)
	}
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	tc := newTokenCache(clock)
	tok := store.APIToken{Name: "ci", Role: auth.Viewer, SHA256: "x"}
	tc.put(tok)
	if got, ok := tc.get("ci"); !ok || got != tok {
		t.Fatalf("fresh entry: %+v %v", got, ok)
	}
	advance(TokenCacheTTL - time.Millisecond)
	if _, ok := tc.get("ci"); !ok {
		t.Errorf("entry gone before its TTL")
	}
	advance(time.Millisecond)
	if _, ok := tc.get("ci"); ok {
		t.Errorf("entry still trusted at its TTL")
	}
	tc.put(tok)
	tc.drop("ci")
	if _, ok := tc.get("ci"); ok {
		t.Errorf("dropped entry still there")
	}
}

func TestTokenRequestErrors(t *testing.T) {
	for _, tc := range []struct {
		req   api.TokenRequest
		field string
	}{{api.TokenRequest{Name: "Bad", Role: "admin"}, "name"}, {api.TokenRequest{Name: "ok", Role: "root"}, "role"}} {
		err := tc.req.Validate()
		e, ok := err.(*api.Error)
		if !ok || e.Field != tc.field {
			t.Errorf("%+v: %v, want a bad_request naming %s", tc.req, err, tc.field)
		}
	}
}
