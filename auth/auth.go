// Package auth is hass's API tokens and roles: the token format, how a token's secret is
// generated, hashed and checked, and what each role may do. It holds no state: where tokens
// are kept (etcd) is package store's job, who checks them is the controller's.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Role is what a token may do. Each role may do what the ones below it may.
type Role string

// The roles, weakest first.
const (
	Viewer   Role = "viewer"   // read only: every GET, /metrics and the event log
	Operator Role = "operator" // and protect, unprotect, VM operations (migrate included)
	Admin    Role = "admin"    // and everything else: tokens, hosts, clusters, maintenance
)

// Roles lists the roles, weakest first.
var Roles = []Role{Viewer, Operator, Admin}

func (r Role) rank() int {
	for i, x := range Roles {
		if x == r {
			return i + 1
		}
	}
	return 0
}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool { return r.rank() > 0 }

// Allows reports whether a token of role r may do what needs role need.
func (r Role) Allows(need Role) bool { return r.Valid() && r.rank() >= need.rank() }

// ParseRole parses a role's name.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !r.Valid() {
		return "", fmt.Errorf("role %q: want one of viewer, operator, admin", s)
	}
	return r, nil
}

// Prefix starts every token, so that one found in a file or a log is recognisable.
const Prefix = "hass_"

// SecretBytes is the length of a token's random secret.
const SecretBytes = 32

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	secretRE = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`) // base64url of SecretBytes, unpadded
)

// CheckName checks a token's name: 1 to 63 lower-case letters, digits and dashes, starting
// and ending with a letter or digit (it is part of the token and of etcd keys).
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("token name %q: want 1 to 63 lower-case letters, digits and dashes, starting and ending with a letter or digit", name)
	}
	return nil
}

// Token is a token as a client holds it: hass_<name>.<secret>.
type Token struct {
	Name   string
	Secret string // base64url, unpadded, of SecretBytes random bytes
}

// String is the token as a client sends it (Authorization: Bearer <token>). It holds the
// secret: never log it.
func (t Token) String() string { return Prefix + t.Name + "." + t.Secret }

// GoString keeps the secret out of %#v.
func (t Token) GoString() string {
	return "auth.Token{Name: " + fmt.Sprintf("%q", t.Name) + ", Secret: <hidden>}"
}

// Hash is the hex SHA-256 of the token's secret, what the store keeps.
func (t Token) Hash() string { return HashSecret(t.Secret) }

// New makes a token named name with a fresh random secret (crypto/rand).
func New(name string) (Token, error) {
	if err := CheckName(name); err != nil {
		return Token{}, err
	}
	b := make([]byte, SecretBytes)
	if _, err := rand.Read(b); err != nil {
		return Token{}, fmt.Errorf("token %s: random secret: %w", name, err)
	}
	return Token{Name: name, Secret: base64.RawURLEncoding.EncodeToString(b)}, nil
}

// ErrMalformed is returned by Parse for a string that is not a hass token.
var ErrMalformed = errors.New("not a hass token (want hass_<name>.<secret>)")

// Parse parses a token as a client sends it. Its error never repeats the token.
func Parse(s string) (Token, error) {
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return Token{}, ErrMalformed
	}
	name, secret, ok := strings.Cut(rest, ".")
	if !ok || CheckName(name) != nil || !secretRE.MatchString(secret) {
		return Token{}, ErrMalformed
	}
	return Token{Name: name, Secret: secret}, nil
}

// HashSecret is the hex SHA-256 of a secret. (The secret is 256 random bits: a fast hash is
// enough, there is nothing to guess.)
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Matches reports, in constant time, whether t's secret hashes to hash.
func (t Token) Matches(hash string) bool {
	return subtle.ConstantTimeCompare([]byte(t.Hash()), []byte(hash)) == 1
}

// LogValue keeps the secret out of structured logs: a token logs as its name.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.Name) }

// ReadFile reads a token from a file (surrounding white space is ignored). Its errors name the
// file, never its content.
func ReadFile(path string) (Token, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Token{}, fmt.Errorf("token file: %w", err)
	}
	t, err := Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return Token{}, fmt.Errorf("token file %s: %w", path, err)
	}
	return t, nil
}

// WriteNewFile writes t to path, readable by its owner only (0600). It never replaces a
// file: if path exists it fails with an error that wraps fs.ErrExist. The file appears whole
// or not at all (written aside, then linked into place).
func WriteNewFile(path string, t Token) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("token file %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, ".token-*")
	if err != nil {
		return fmt.Errorf("token file %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.WriteString(t.String() + "\n")
	if err == nil {
		err = f.Chmod(0o600) // CreateTemp makes it 0600 already; umask cannot widen it
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("token file %s: %w", path, err)
	}
	return nil
}
