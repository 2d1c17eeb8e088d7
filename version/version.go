// Package version says which hass this is: the version stamped at build time with
//
//	go build -ldflags "-X github.com/hassproject/hass/version.Version=1.2.3" ./cmd/hass
//
// or else what the Go toolchain recorded in the binary (the module version of a
// `go install ...@v1.2.3`, the VCS revision of a build from a checkout).
package version

import (
	"runtime/debug"
	"strings"
)

// Version is set with -ldflags -X; empty means "ask the build info".
var Version string

// String is this binary's version.
func String() string {
	bi, ok := debug.ReadBuildInfo()
	return resolve(Version, bi, ok)
}

// resolve picks the version: the stamped one, else the module's version from the build info,
// else "devel", with the VCS revision (and "-dirty") when the build info has one.
func resolve(stamped string, bi *debug.BuildInfo, ok bool) string {
	if s := strings.TrimSpace(stamped); s != "" {
		return s
	}
	v := "devel"
	if !ok || bi == nil {
		return v
	}
	if m := bi.Main.Version; m != "" && m != "(devel)" {
		v = m
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev != "" && v == "devel" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		v += "+" + rev + dirty
	}
	return v
}

// Go is the Go toolchain the binary was built with.
func Go() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.GoVersion
	}
	return "unknown"
}
