package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hassproject/hass/auth"
	"github.com/hassproject/hass/store"
)

// DefaultDataDir is where hass up and hass controller keep their state unless told otherwise
// (and so where the CLI looks for the admin token file).
const DefaultDataDir = "/var/lib/hass"

// AdminTokenFile is the name, in the data directory, of the file the first admin token is
// written to.
const AdminTokenFile = "admin.token"

// BootstrapTokenName names the first admin token.
const BootstrapTokenName = "admin"

// bootstrapRetry is how long bootstrapLoop waits before trying again when the store did not
// answer.
const bootstrapRetry = 2 * time.Second

// errTokenFile marks a token file that cannot be used: retrying does not help.
var errTokenFile = errors.New("admin token file")

// bootstrapLoop runs bootstrapAdmin until it is done (then closes done) or ctx ends; the
// store not answering is retried, a token file that cannot be used is returned.
func bootstrapLoop(ctx context.Context, st *store.Store, path string, log *slog.Logger, done chan<- struct{}) error {
	for {
		_, err := bootstrapAdmin(ctx, st, path, log)
		if err == nil {
			close(done)
			return nil
		}
		if errors.Is(err, errTokenFile) {
			return err
		}
		log.Warn("cannot check for API tokens yet: trying again", "admin_token_file", path, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(bootstrapRetry):
		}
	}
}

// bootstrapAdmin makes sure the API can be used: when the store holds no token at all, it
// stores an admin token and leaves it in path (mode 0600). A token already in path (written
// by an earlier start, or by an operator who chose it) is the one stored; else a new one is
// made and the file created. Of several controllers starting at once only the one whose
// transaction wins keeps its file; the others remove theirs and log that a token exists. The
// token itself is never logged. It reports whether this call stored the token.
func bootstrapAdmin(ctx context.Context, st *store.Store, path string, log *slog.Logger) (bool, error) {
	if path == "" {
		return false, nil
	}
	existing, err := st.APITokens(ctx)
	if err != nil {
		return false, fmt.Errorf("admin token: %w", err)
	}
	if len(existing) > 0 {
		log.Info("API tokens exist: no admin token to create", "tokens", len(existing), "admin_token_file", path)
		return false, nil
	}
	tok, err := auth.ReadFile(path)
	wrote := false
	switch {
	case err == nil:
		log.Info("no API token in the store: storing the admin token of the token file", "admin_token_file", path)
	case errors.Is(err, fs.ErrNotExist):
		if tok, err = auth.New(BootstrapTokenName); err != nil {
			return false, fmt.Errorf("admin token: %w", err)
		}
		if err := auth.WriteNewFile(path, tok); err != nil {
			return false, fmt.Errorf("%w: %w", errTokenFile, err)
		}
		wrote = true
	default:
		return false, fmt.Errorf("%w: %w (remove it to get a new one)", errTokenFile, err)
	}
	err = st.CreateFirstToken(ctx, store.APIToken{Name: tok.Name, Role: auth.Admin, SHA256: tok.Hash(),
		Created: time.Now().UTC().Truncate(time.Second), CreatedBy: "bootstrap"})
	if err != nil {
		if wrote {
			os.Remove(path)
		}
		if errors.Is(err, store.ErrTokenExists) {
			log.Info("another controller created the first API token: its admin token file is on its host", "admin_token_file", path)
			return false, nil
		}
		return false, fmt.Errorf("admin token: %w", err)
	}
	abs, _ := filepath.Abs(path)
	log.Info("created the first API token (role admin); the CLI reads it from this file as root, or use --token-file", "admin_token_file", abs, "token", tok.Name)
	return true, nil
}
