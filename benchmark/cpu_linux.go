package benchmark

import (
	"syscall"
	"time"
	"unsafe"
)

// cpuClock reads one of Linux's CPU-time clocks: time spent running, not waiting, so other
// load on the machine does not count.
func cpuClock(id uintptr) time.Duration {
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, id, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0
	}
	return time.Duration(ts.Nano())
}

// processCPU is the CPU time of the whole process: every thread, the garbage collector's too.
func processCPU() time.Duration { return cpuClock(2) } // CLOCK_PROCESS_CPUTIME_ID

// threadCPU is the CPU time of the calling thread; callers lock their goroutine to it.
func threadCPU() time.Duration { return cpuClock(3) } // CLOCK_THREAD_CPUTIME_ID
