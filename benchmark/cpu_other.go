//go:build !linux

package benchmark

import "time"

var start = time.Now()

// processCPU falls back to the wall clock where Linux's CPU-time clocks are missing.
func processCPU() time.Duration { return time.Since(start) }

// threadCPU falls back to the wall clock where Linux's CPU-time clocks are missing.
func threadCPU() time.Duration { return time.Since(start) }
