// Command hass is the High Availability Service System: one binary for every role.
package main

import (
	"os"

	"github.com/hassproject/hass/benchmark"
)

func main() {
	if benchmark.Child() { // a process `hass bench --store` started
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
