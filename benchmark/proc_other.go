//go:build !linux

package benchmark

import (
	"errors"
	"time"
)

// procCPU is only known on Linux.
func procCPU(pid int) (time.Duration, error) {
	return 0, errors.New("the CPU time of another process is read from /proc (Linux only)")
}
