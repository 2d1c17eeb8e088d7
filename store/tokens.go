package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hassproject/hass/auth"
)

const tokenPrefix = prefix + "tokens/"

// ErrTokenExists is returned (wrapped) by CreateToken when a token of that name exists, and
// by CreateFirstToken when any token exists.
var ErrTokenExists = errors.New("a token exists")

// APIToken is an API token as the store keeps it: its secret only as a hash.
type APIToken struct {
	Name      string    `json:"name"`
	Role      auth.Role `json:"role"`
	SHA256    string    `json:"sha256"` // hex SHA-256 of the secret
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by"` // the name of the token that created it; "bootstrap" for the first
}

// Validate names the first bad field.
func (t APIToken) Validate() error {
	if err := auth.CheckName(t.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if !t.Role.Valid() {
		return fmt.Errorf("role %q: want viewer, operator or admin", t.Role)
	}
	if len(t.SHA256) != 64 {
		return fmt.Errorf("sha256: want 64 hex digits, got %d characters", len(t.SHA256))
	}
	return nil
}

func tokenKey(name string) string { return tokenPrefix + name }

// CreateToken stores a new token; ErrTokenExists if one of that name exists.
func (s *Store) CreateToken(ctx context.Context, t APIToken) error {
	return s.createToken(ctx, t, clientv3.Compare(clientv3.CreateRevision(tokenKey(t.Name)), "=", 0))
}

// CreateFirstToken stores t only if no token exists at all (one etcd transaction: of several
// controllers starting at once, one wins); ErrTokenExists otherwise.
func (s *Store) CreateFirstToken(ctx context.Context, t APIToken) error {
	return s.createToken(ctx, t, clientv3.Compare(clientv3.CreateRevision(tokenPrefix), "=", 0).WithPrefix())
}

func (s *Store) createToken(ctx context.Context, t APIToken, cond clientv3.Cmp) error {
	if err := t.Validate(); err != nil {
		return fmt.Errorf("store: create token: %w", err)
	}
	b, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("store: create token %s: %w", t.Name, err)
	}
	if err := s.writable(); err != nil {
		return fmt.Errorf("store: create token %s: %w", t.Name, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(cond).Then(clientv3.OpPut(tokenKey(t.Name), string(b))).Commit()
	if err != nil {
		return fmt.Errorf("store: create token %s: %w", t.Name, s.cause(err))
	}
	if !resp.Succeeded {
		return fmt.Errorf("store: create token %s: %w", t.Name, ErrTokenExists)
	}
	return nil
}

// APIToken returns one token; ErrNotFound if there is none.
func (s *Store) APIToken(ctx context.Context, name string) (APIToken, error) {
	if err := auth.CheckName(name); err != nil {
		return APIToken{}, fmt.Errorf("store: get token: %w", err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, tokenKey(name))
	if err != nil {
		return APIToken{}, fmt.Errorf("store: get token %s: %w", name, s.cause(err))
	}
	if len(resp.Kvs) == 0 {
		return APIToken{}, fmt.Errorf("store: get token %s: %w", name, ErrNotFound)
	}
	return decodeToken(resp.Kvs[0].Key, resp.Kvs[0].Value)
}

func decodeToken(key, val []byte) (APIToken, error) {
	var t APIToken
	if err := json.Unmarshal(val, &t); err != nil {
		return APIToken{}, fmt.Errorf("store: token at %s: %w", key, err)
	}
	if err := t.Validate(); err != nil {
		return APIToken{}, fmt.Errorf("store: token at %s: %w", key, err)
	}
	if tokenKey(t.Name) != string(key) {
		return APIToken{}, fmt.Errorf("store: token at %s is named %q", key, t.Name)
	}
	return t, nil
}

// Tokens lists the tokens, by name.
func (s *Store) APITokens(ctx context.Context) ([]APIToken, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, tokenPrefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("store: list tokens: %w", s.cause(err))
	}
	out := make([]APIToken, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		t, err := decodeToken(kv.Key, kv.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// DeleteToken deletes a token; ErrNotFound if there was none.
func (s *Store) DeleteToken(ctx context.Context, name string) error {
	if err := auth.CheckName(name); err != nil {
		return fmt.Errorf("store: delete token: %w", err)
	}
	if err := s.writable(); err != nil {
		return fmt.Errorf("store: delete token %s: %w", name, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Delete(ctx, tokenKey(name))
	if err != nil {
		return fmt.Errorf("store: delete token %s: %w", name, s.cause(err))
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("store: delete token %s: %w", name, ErrNotFound)
	}
	return nil
}
