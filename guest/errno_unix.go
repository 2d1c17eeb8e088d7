//go:build unix

package guest

import "syscall"

func errConnRefused() error { return syscall.ECONNREFUSED }
