package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/hassproject/hass/auth"
)

// fakeAuth is an Authenticator over a map of tokens, and an Auditor that keeps its records.
type fakeAuth struct {
	mu      sync.Mutex
	tokens  map[string]Principal // token string -> whose
	records []AuditRecord
}

func newFakeAuth(t testing.TB) (*fakeAuth, map[auth.Role]string) {
	a := &fakeAuth{tokens: map[string]Principal{}}
	byRole := map[auth.Role]string{}
	for _, r := range auth.Roles {
		tok, err := auth.New("t-" + string(r))
		if err != nil {
			t.Fatal(err)
		}
		a.tokens[tok.String()] = Principal{Name: tok.Name, Role: r}
		byRole[r] = tok.String()
	}
	return a, byRole
}

func (a *fakeAuth) Authenticate(_ context.Context, tok string) (Principal, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.tokens[tok]
	if !ok {
		return Principal{}, fmt.Errorf("fake: %w", ErrBadToken)
	}
	return p, nil
}

func (a *fakeAuth) revoke(tok string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.tokens, tok)
}

func (a *fakeAuth) Audit(_ context.Context, rec AuditRecord) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.records = append(a.records, rec)
}

func (a *fakeAuth) Records() []AuditRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]AuditRecord(nil), a.records...)
}

func (f *fakeService) CreateToken(ctx context.Context, req TokenRequest) (NewToken, error) {
	if err := f.record(fakeCall{Method: "CreateToken", Name: req.Name}); err != nil {
		return NewToken{}, err
	}
	by, _ := PrincipalFrom(ctx)
	tok, err := auth.New(req.Name)
	if err != nil {
		return NewToken{}, err
	}
	return NewToken{TokenInfo: TokenInfo{Name: req.Name, Role: req.Role, Created: t0, CreatedBy: by.Name}, Token: tok.String()}, nil
}

func (f *fakeService) Tokens(ctx context.Context) ([]TokenInfo, error) {
	if err := f.record(fakeCall{Method: "Tokens"}); err != nil {
		return nil, err
	}
	return []TokenInfo{{Name: "admin", Role: "admin", Created: t0, CreatedBy: "bootstrap"}}, nil
}

func (f *fakeService) RevokeToken(ctx context.Context, name string) error {
	return f.record(fakeCall{Method: "RevokeToken", Name: name})
}

// authExample is a request for op that the server serves (with the right role).
func authExample(op operation) (target string, body []byte) {
	target = op.path
	switch {
	case strings.HasPrefix(op.path, "/v1/vms/{name}"):
		target = strings.Replace(target, "{name}", "v1", 1)
	case strings.HasPrefix(op.path, "/v1/tokens/{name}"):
		target = strings.Replace(target, "{name}", "t-viewer", 1)
	default:
		target = strings.Replace(target, "{name}", "h1", 1)
	}
	switch op.method + " " + op.path {
	case "POST /v1/vms/{name}/operations":
		body = []byte(`{"op":"reboot"}`)
	case "POST /v1/hosts/{name}/maintenance":
		body = []byte(`{"on":true}`)
	case "POST /v1/tokens":
		body = []byte(`{"name":"ci","role":"viewer"}`)
	case "PUT /v1/hosts/{name}":
		body = []byte(`{"cluster":"default"}`)
	}
	return target, body
}

// needs is the weakest role each operation allows: what the README and the document promise.
func needs(op operation) auth.Role {
	switch {
	case strings.HasPrefix(op.path, "/v1/tokens"):
		return auth.Admin
	case op.method == "GET":
		return auth.Viewer
	case strings.HasPrefix(op.path, "/v1/vms/"):
		return auth.Operator
	}
	return auth.Admin
}

func authSend(h http.Handler, method, target string, body []byte, token string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(string(body)))
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func errorOf(t *testing.T, rec *httptest.ResponseRecorder) *Error {
	t.Helper()
	var eb errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == nil {
		t.Fatalf("%d without an error body: %q", rec.Code, rec.Body)
	}
	return eb.Error
}

// TestOpenAPIAuthEveryOperation walks the document: every operation but the open ones is
// refused 401 without a token, with a malformed, unknown or revoked one; 403 with a role too
// weak (naming both roles); served with the right one. Refused requests never reach the
// service, and no refusal tells anything of a VM or host.
func TestOpenAPIAuthEveryOperation(t *testing.T) {
	d := loadOAS(t)
	a, byRole := newFakeAuth(t)
	revoked, err := auth.New("gone")
	if err != nil {
		t.Fatal(err)
	}
	a.tokens[revoked.String()] = Principal{Name: "gone", Role: auth.Admin}
	a.revoke(revoked.String())
	unknown, _ := auth.New("t-admin") // right name, wrong secret
	f := newFake()
	h := NewServer(f, nil, WithAuth(a), WithMetrics(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("m 1\n")) })))
	ops := d.operations()
	if len(ops) < 18 {
		t.Fatalf("only %d operations in the document", len(ops))
	}
	for _, op := range ops {
		target, body := authExample(op)
		desc := op.method + " " + target
		if op.path == "/openapi.json" || op.path == "/healthz" {
			if rec := authSend(h, op.method, target, nil, ""); rec.Code != 200 {
				t.Errorf("%s without a token: %d, want 200 (open)", desc, rec.Code)
			}
			continue
		}
		if sec, ok := op.raw["security"]; ok {
			t.Errorf("%s: security %v overrides the document's bearer requirement", desc, sec)
		}
		for _, bad := range []string{"", "Bearer", "Basic dXNlcjpwYXNz", "Bearer nonsense", "Bearer " + revoked.String(), "Bearer " + unknown.String()} {
			n := len(f.Calls())
			rec := authSend(h, op.method, target, body, bad)
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("%s with Authorization %q: %d %s, want 401", desc, bad, rec.Code, rec.Body)
				continue
			}
			if e := errorOf(t, rec); e.Code != CodeUnauthenticated {
				t.Errorf("%s: code %q, want unauthenticated", desc, e.Code)
			}
			if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s: WWW-Authenticate %q", desc, rec.Header().Get("WWW-Authenticate"))
			}
			if strings.Contains(rec.Body.String(), "v1") && !strings.Contains(desc, "/v1/") || strings.Contains(rec.Body.String(), "h1") {
				t.Errorf("%s: 401 body tells of a VM or host: %s", desc, rec.Body)
			}
			if len(f.Calls()) != n {
				t.Errorf("%s with Authorization %q reached the service", desc, bad)
			}
		}
		need := needs(op)
		for _, r := range auth.Roles {
			n := len(f.Calls())
			rec := authSend(h, op.method, target, body, "Bearer "+byRole[r])
			if r.Allows(need) {
				// Served: it reached the service (a second unprotect of v1 is a 404 from it).
				if rec.Code == 401 || rec.Code == 403 || len(f.Calls()) == n {
					t.Errorf("%s as %s: %d %s, want it served", desc, r, rec.Code, rec.Body)
				}
				continue
			}
			if rec.Code != http.StatusForbidden {
				t.Errorf("%s as %s: %d %s, want 403 (needs %s)", desc, r, rec.Code, rec.Body, need)
				continue
			}
			e := errorOf(t, rec)
			if e.Code != CodeForbidden || !strings.Contains(e.Message, "needs role "+string(need)) || !strings.Contains(e.Message, "has role "+string(r)) {
				t.Errorf("%s as %s: %+v, want forbidden naming %s and %s", desc, r, e, need, r)
			}
			if strings.Contains(e.Message, "h1") || strings.Contains(e.Message, "/v1/vms/v1") {
				t.Errorf("%s: 403 tells of a VM or host: %s", desc, e.Message)
			}
			if len(f.Calls()) != n {
				t.Errorf("%s as %s reached the service", desc, r)
			}
		}
	}
	// /metrics is not in the document (not JSON) but guarded all the same.
	if rec := authSend(h, "GET", "/metrics", nil, ""); rec.Code != 401 {
		t.Errorf("GET /metrics without a token: %d", rec.Code)
	}
	if rec := authSend(h, "GET", "/metrics", nil, "Bearer "+byRole[auth.Viewer]); rec.Code != 200 {
		t.Errorf("GET /metrics as viewer: %d", rec.Code)
	}
	// An unknown route says 401 before 404: no token, no map of the API.
	if rec := authSend(h, "GET", "/v1/nope", nil, ""); rec.Code != 401 {
		t.Errorf("GET /v1/nope without a token: %d", rec.Code)
	}
}

// TestAuditTrail: every mutating request that reached its handler is audited with its
// token's name and the answer's status, refused ones (400, 404) included; reads and 401/403
// are not.
func TestAuditTrail(t *testing.T) {
	a, byRole := newFakeAuth(t)
	f := newFake()
	h := NewServer(f, nil, WithAuth(a))
	authSend(h, "GET", "/v1/vms", nil, "Bearer "+byRole[auth.Admin])
	authSend(h, "PUT", "/v1/vms/v1/protection", nil, "Bearer "+byRole[auth.Operator])
	authSend(h, "POST", "/v1/vms/v1/operations", []byte(`{"op":"explode"}`), "Bearer "+byRole[auth.Operator])
	authSend(h, "PUT", "/v1/hosts/h1", []byte(`{}`), "Bearer "+byRole[auth.Operator]) // 403
	authSend(h, "DELETE", "/v1/vms/v1/protection", nil, "")                           // 401
	rec := authSend(h, "POST", "/v1/tokens", []byte(`{"name":"ci","role":"viewer"}`), "Bearer "+byRole[auth.Admin])
	if rec.Code != 201 {
		t.Fatalf("create token: %d %s", rec.Code, rec.Body)
	}
	var nt NewToken
	if err := json.Unmarshal(rec.Body.Bytes(), &nt); err != nil || nt.CreatedBy != "t-admin" || !strings.HasPrefix(nt.Token, "hass_ci.") {
		t.Errorf("created %+v (%v), want created by t-admin, a hass_ci. token", nt, err)
	}
	want := []AuditRecord{
		{Token: "t-operator", Role: auth.Operator, Method: "PUT", Path: "/v1/vms/v1/protection", Status: 200},
		{Token: "t-operator", Role: auth.Operator, Method: "POST", Path: "/v1/vms/v1/operations", Status: 400},
		{Token: "t-admin", Role: auth.Admin, Method: "POST", Path: "/v1/tokens", Status: 201},
	}
	got := a.Records()
	if len(got) != len(want) {
		t.Fatalf("audited %+v, want %+v", got, want)
	}
	for i := range want {
		got[i].Remote = ""
		if got[i] != want[i] {
			t.Errorf("record %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}
