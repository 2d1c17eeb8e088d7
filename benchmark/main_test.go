package benchmark

import (
	"os"
	"testing"
)

// TestMain lets the test binary be EtcdMix's child processes too.
func TestMain(m *testing.M) {
	if Child() {
		return
	}
	os.Exit(m.Run())
}
