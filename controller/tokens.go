package controller

// API tokens: the controller checks them (api.Authenticator) over the store, with a small
// cache, manages them (api.TokenService) and records the audit trail (api.Auditor).

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hassproject/hass/api"
	"github.com/hassproject/hass/auth"
	"github.com/hassproject/hass/store"
)

var (
	_ api.Authenticator = (*Controller)(nil)
	_ api.Auditor       = (*Controller)(nil)
	_ api.TokenService  = (*Controller)(nil)
)

// TokenCacheTTL is how long a controller trusts a token it read from the store: a token
// revoked through another controller is refused here at most this long after. One revoked
// through this controller is dropped from its cache at once.
const TokenCacheTTL = 2 * time.Second

// tokenCache remembers the tokens read from the store, by name, for TokenCacheTTL.
type tokenCache struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]cachedToken
}

type cachedToken struct {
	tok  store.APIToken
	read time.Time
}

func newTokenCache(now func() time.Time) *tokenCache {
	if now == nil {
		now = time.Now
	}
	return &tokenCache{now: now, m: map[string]cachedToken{}}
}

func (tc *tokenCache) get(name string) (store.APIToken, bool) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	e, ok := tc.m[name]
	if !ok || tc.now().Sub(e.read) >= TokenCacheTTL {
		delete(tc.m, name)
		return store.APIToken{}, false
	}
	return e.tok, true
}

func (tc *tokenCache) put(t store.APIToken) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.m[t.Name] = cachedToken{tok: t, read: tc.now()}
}

func (tc *tokenCache) drop(name string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	delete(tc.m, name)
}

// Authenticate implements api.Authenticator: api.ErrBadToken (wrapped) for a token that is
// malformed, unknown, revoked or whose secret does not match.
func (c *Controller) Authenticate(ctx context.Context, token string) (api.Principal, error) {
	t, err := auth.Parse(token)
	if err != nil {
		return api.Principal{}, fmt.Errorf("%w: %v", api.ErrBadToken, err)
	}
	st, ok := c.tokens.get(t.Name)
	if !ok {
		st, err = c.st.APIToken(ctx, t.Name)
		if errors.Is(err, store.ErrNotFound) {
			return api.Principal{}, fmt.Errorf("%w: no token %s", api.ErrBadToken, t.Name)
		}
		if err != nil {
			return api.Principal{}, err
		}
		c.tokens.put(st)
	}
	if !t.Matches(st.SHA256) {
		return api.Principal{}, fmt.Errorf("%w: token %s: wrong secret", api.ErrBadToken, t.Name)
	}
	return api.Principal{Name: st.Name, Role: st.Role}, nil
}

func tokenInfo(t store.APIToken) api.TokenInfo {
	return api.TokenInfo{Name: t.Name, Role: string(t.Role), Created: t.Created, CreatedBy: t.CreatedBy}
}

func tokenError(err error) error {
	switch {
	case errors.Is(err, store.ErrTokenExists):
		return api.Conflict("a token of that name exists (revoke it first)")
	case errors.Is(err, store.ErrNotFound):
		return api.NotFound("no such token")
	}
	return api.Unavailable("the token store cannot be reached: %v", err)
}

// CreateToken implements api.TokenService.
func (c *Controller) CreateToken(ctx context.Context, req api.TokenRequest) (api.NewToken, error) {
	role, err := auth.ParseRole(req.Role)
	if err != nil {
		return api.NewToken{}, api.BadRequest("role", "%v", err)
	}
	t, err := auth.New(req.Name)
	if err != nil {
		return api.NewToken{}, api.BadRequest("name", "%v", err)
	}
	by := "unknown"
	if p, ok := api.PrincipalFrom(ctx); ok {
		by = p.Name
	}
	st := store.APIToken{Name: t.Name, Role: role, SHA256: t.Hash(), Created: time.Now().UTC().Truncate(time.Second), CreatedBy: by}
	if err := c.st.CreateToken(ctx, st); err != nil {
		return api.NewToken{}, tokenError(err)
	}
	c.log.Info("api token created", "token", t.Name, "role", role, "by", by)
	return api.NewToken{TokenInfo: tokenInfo(st), Token: t.String()}, nil
}

// Tokens implements api.TokenService.
func (c *Controller) Tokens(ctx context.Context) ([]api.TokenInfo, error) {
	ts, err := c.st.APITokens(ctx)
	if err != nil {
		return nil, tokenError(err)
	}
	out := make([]api.TokenInfo, 0, len(ts))
	for _, t := range ts {
		out = append(out, tokenInfo(t))
	}
	return out, nil
}

// RevokeToken implements api.TokenService: refused here at once, elsewhere within
// TokenCacheTTL.
func (c *Controller) RevokeToken(ctx context.Context, name string) error {
	// The last admin token is kept: without one, nobody could make tokens any more.
	ts, err := c.st.APITokens(ctx)
	if err != nil {
		return tokenError(err)
	}
	admins, target := 0, false
	for _, t := range ts {
		if t.Role == auth.Admin {
			admins++
			target = target || t.Name == name
		}
	}
	if target && admins == 1 {
		return api.Conflict("token %s is the last admin token: create another admin token before revoking it", name)
	}
	err = c.st.DeleteToken(ctx, name)
	c.tokens.drop(name)
	if err != nil {
		return tokenError(err)
	}
	by := "unknown"
	if p, ok := api.PrincipalFrom(ctx); ok {
		by = p.Name
	}
	c.log.Info("api token revoked", "token", name, "by", by)
	return nil
}

// Audit implements api.Auditor: the request goes into the event log as an audit event
// (with the VM or host it was about, for hass events --vm/--host).
func (c *Controller) Audit(ctx context.Context, rec api.AuditRecord) {
	ev := store.Event{At: time.Now().UTC(), Type: "audit",
		Msg: fmt.Sprintf("token %s (%s): %s %s: %d", rec.Token, rec.Role, rec.Method, rec.Path, rec.Status)}
	if rest, ok := strings.CutPrefix(rec.Path, "/v1/vms/"); ok {
		ev.VM, _, _ = strings.Cut(rest, "/")
	} else if rest, ok := strings.CutPrefix(rec.Path, "/v1/hosts/"); ok {
		ev.Host, _, _ = strings.Cut(rest, "/")
	}
	if _, err := c.st.AppendEvents(ctx, []store.Event{ev}); err != nil {
		c.log.Error("audit: event log write failed", "token", rec.Token, "method", rec.Method, "path", rec.Path, "status", rec.Status, "err", err)
	}
}
