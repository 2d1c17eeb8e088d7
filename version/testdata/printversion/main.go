// Command printversion prints version.String(): the ldflags test builds it.
package main

import (
	"fmt"

	"github.com/hassproject/hass/version"
)

func main() { fmt.Println(version.String()) }
