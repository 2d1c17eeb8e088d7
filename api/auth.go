package api

// Authentication, roles and the audit trail. Every request but GET /openapi.json and GET
// /healthz carries "Authorization: Bearer <token>"; each route needs a role (auth.Viewer for
// every GET, auth.Operator for protection and VM operations, auth.Admin for the rest); every
// mutating request that reaches its handler is handed to the Auditor with the token's name.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/hassproject/hass/auth"
)

// ErrBadToken is what an Authenticator returns (wrapped) for a token that is malformed,
// unknown or revoked: the server answers 401. Any other error is a 503.
var ErrBadToken = errors.New("invalid or revoked token")

// Principal is who a request comes from: its token's name and role.
type Principal struct {
	Name string
	Role auth.Role
}

// Authenticator checks a bearer token (as sent, secret included) and says whose it is.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Principal, error)
}

// AuditRecord is one mutating request, as the audit trail records it: never its body.
type AuditRecord struct {
	Token  string // the token's name
	Role   auth.Role
	Method string
	Path   string
	Status int // the answer's HTTP status
	Remote string
}

// Auditor records mutating requests (the controller appends them to the event log).
type Auditor interface {
	Audit(ctx context.Context, rec AuditRecord)
}

// TokenService manages API tokens (admin only). The creator is PrincipalFrom(ctx).
type TokenService interface {
	CreateToken(ctx context.Context, req TokenRequest) (NewToken, error)
	Tokens(ctx context.Context) ([]TokenInfo, error)
	RevokeToken(ctx context.Context, name string) error
}

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// TokenInfo is a token as listed: never its secret nor its hash.
type TokenInfo struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by"`
}

// NewToken is a token just created: the only answer that holds its secret.
type NewToken struct {
	TokenInfo
	Token string `json:"token"`
}

// RevokedToken is the answer to DELETE /v1/tokens/{name}.
type RevokedToken struct {
	Name string `json:"name"`
}

type tokenList struct {
	Tokens []TokenInfo `json:"tokens"`
}

var tokenFields = knownFields{"": jsonFields(reflect.TypeFor[TokenRequest]())}

// Validate names the first bad field.
func (r TokenRequest) Validate() error {
	if err := auth.CheckName(r.Name); err != nil {
		return BadRequest("name", "%v", err)
	}
	if _, err := auth.ParseRole(r.Role); err != nil {
		return BadRequest("role", "%v", err)
	}
	return nil
}

type principalKey struct{}

// PrincipalFrom returns who made the request ctx belongs to (ok false: no authentication).
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// WithPrincipal returns ctx as a request by p carries it (for callers of a Service in-process
// and for tests).
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// WithAuth turns authentication on: every request but GET /openapi.json and GET /healthz
// must carry a token a checks, of a role the route allows. If a is also an Auditor, every
// mutating request that reaches its handler is audited.
func WithAuth(a Authenticator) Option {
	return func(s *server) {
		s.authn = a
		s.audit, _ = a.(Auditor)
	}
}

// open reports whether a request needs no token.
func open(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	// The web status page's own files hold no data (a browser cannot send a bearer token
	// when it loads a page): every request it makes for data carries the token.
	return r.URL.Path == "/openapi.json" || r.URL.Path == "/healthz" || r.URL.Path == "/ui" || strings.HasPrefix(r.URL.Path, "/ui/")
}

func unauthenticated(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="hass"`)
	writeError(w, &Error{Code: CodeUnauthenticated, Message: msg})
}

// authenticate checks r's token; it answers (401, 503) and returns false if it is not good.
func (s *server) authenticate(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	if s.authn == nil || open(r) {
		return r, true
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		s.log.Warn("api: request without a token refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		unauthenticated(w, "authentication required: send Authorization: Bearer <token> (hass token create, or the admin token file hass up wrote)")
		return r, false
	}
	scheme, tok, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		s.log.Warn("api: request with a non-bearer Authorization refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		unauthenticated(w, "authentication required: the Authorization header must be Bearer <token>")
		return r, false
	}
	p, err := s.authn.Authenticate(r.Context(), strings.TrimSpace(tok))
	if errors.Is(err, ErrBadToken) {
		s.log.Warn("api: request with an invalid or revoked token refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		unauthenticated(w, "invalid or revoked token")
		return r, false
	}
	if err != nil {
		s.fail(w, r, Unavailable("cannot check the token now: %v", err))
		return r, false
	}
	return r.WithContext(WithPrincipal(r.Context(), p)), true
}

// guard wraps a route's handler: the token's role must allow need; a mutating request is
// audited once answered.
func (s *server) guard(need auth.Role, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.authn == nil {
			h(w, r)
			return
		}
		p, ok := PrincipalFrom(r.Context())
		if !ok {
			if open(r) {
				h(w, r)
				return
			}
			unauthenticated(w, "authentication required")
			return
		}
		if !p.Role.Allows(need) {
			s.log.Warn("api: request refused for its token's role", "method", r.Method, "path", r.URL.Path,
				"token", p.Name, "role", p.Role, "need", need, "remote", r.RemoteAddr)
			writeError(w, &Error{Code: CodeForbidden,
				Message: fmt.Sprintf("forbidden: %s %s needs role %s; this token (%s) has role %s", r.Method, routeOf(r), need, p.Name, p.Role)})
			return
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead || s.audit == nil {
			h(w, r)
			return
		}
		sw, ok := w.(*statusWriter)
		if !ok {
			sw = &statusWriter{ResponseWriter: w}
		}
		h(sw, r)
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		// The request is answered; its record must not be cut short by the client leaving.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
		defer cancel()
		s.audit.Audit(ctx, AuditRecord{Token: p.Name, Role: p.Role, Method: r.Method, Path: r.URL.Path, Status: status, Remote: r.RemoteAddr})
	}
}

// routeOf is the route's pattern (no VM or host name in a 403's message).
func routeOf(r *http.Request) string {
	if r.Pattern != "" {
		if _, p, ok := strings.Cut(r.Pattern, " "); ok {
			return p
		}
		return r.Pattern
	}
	return "this route"
}

// ---- token routes ----

func (s *server) tokenRoutes() []route {
	return []route{
		{"GET", "/v1/tokens", s.listTokens, auth.Admin},
		{"POST", "/v1/tokens", s.createToken, auth.Admin},
		{"DELETE", "/v1/tokens/{name}", s.revokeToken, auth.Admin},
	}
}

func (s *server) tokenSvc(w http.ResponseWriter, r *http.Request) (TokenService, bool) {
	ts, ok := s.svc.(TokenService)
	if !ok {
		s.fail(w, r, &Error{Code: CodeNotFound, Message: "this daemon manages no tokens"})
	}
	return ts, ok
}

func (s *server) listTokens(w http.ResponseWriter, r *http.Request) {
	ts, ok := s.tokenSvc(w, r)
	if !ok {
		return
	}
	list, err := ts.Tokens(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if list == nil {
		list = []TokenInfo{}
	}
	writeJSON(w, http.StatusOK, tokenList{Tokens: list})
}

func (s *server) createToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	body, err := s.readBody(w, r)
	if err == nil {
		if isBlank(body) {
			err = BadRequest("body", "want a JSON object with name and role")
		} else {
			err = decodeStrict(body, &req, tokenFields)
		}
	}
	if err == nil {
		err = req.Validate()
	}
	if err != nil {
		writeError(w, err)
		return
	}
	ts, ok := s.tokenSvc(w, r)
	if !ok {
		return
	}
	nt, err := ts.CreateToken(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, nt)
}

func (s *server) revokeToken(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := auth.CheckName(name); err != nil {
		writeError(w, BadRequest("name", "%v", err))
		return
	}
	ts, ok := s.tokenSvc(w, r)
	if !ok {
		return
	}
	if err := ts.RevokeToken(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, RevokedToken{Name: name})
}

// ---- client ----

// WithToken makes the client send token with every request (Authorization: Bearer). It
// returns c.
func (c *Client) WithToken(token string) *Client {
	c.token = token
	return c
}

// CreateToken creates a token (admin); the answer is the only place its secret appears.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (NewToken, error) {
	var out NewToken
	err := c.do(ctx, http.MethodPost, "/v1/tokens", req, &out)
	return out, err
}

// Tokens lists the tokens (admin): names, roles, creation; never secrets.
func (c *Client) Tokens(ctx context.Context) ([]TokenInfo, error) {
	var out tokenList
	err := c.do(ctx, http.MethodGet, "/v1/tokens", nil, &out)
	return out.Tokens, err
}

// RevokeToken deletes a token (admin); requests with it are refused from then on.
func (c *Client) RevokeToken(ctx context.Context, name string) error {
	if err := auth.CheckName(name); err != nil {
		return BadRequest("name", "%v", err)
	}
	return c.do(ctx, http.MethodDelete, "/v1/tokens/"+name, nil, &RevokedToken{})
}
