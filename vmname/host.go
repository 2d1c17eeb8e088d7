package vmname

import (
	"fmt"
	"regexp"
)

// HostPattern is the rule for a host's name in hass: what a DNS label or host name holds
// (letters, digits, '.', '-', '_'), starting with a letter or digit, at most 253
// characters. A host's name is part of etcd keys and printed in tables: nothing else.
const HostPattern = `^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`

var hostRE = regexp.MustCompile(HostPattern)

// CheckHost checks a host's name against HostPattern.
func CheckHost(name string) error {
	if !hostRE.MatchString(name) {
		return fmt.Errorf("%q: a host name is letters, digits, '.', '-' and '_', starting with a letter or digit, at most 253 characters", name)
	}
	return nil
}
