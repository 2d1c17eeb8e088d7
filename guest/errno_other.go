//go:build !unix

package guest

import "errors"

func errConnRefused() error { return errors.New("connection refused") }
